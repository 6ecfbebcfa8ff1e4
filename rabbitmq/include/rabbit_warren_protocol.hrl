%% The wire constants of the plugin <-> sidecar protocol, for every module of
%% the plugin. They mirror src/sidecar/protocol.ts (Op, Push, TOKEN_BYTES,
%% ID_BYTES, RecoverMode) and src/queue/messages.ts (Flags, FetchMode),
%% as docs/PROTOCOL.md describes them: change one side, change the other.

%% request op codes (protocol.ts Op)
-define(OP_START, 1).
-define(OP_INIT, 2).
-define(OP_TERMINATE, 3).
-define(OP_DELETE_AND_TERMINATE, 4).
-define(OP_DELETE_CRASHED, 5).
-define(OP_PURGE, 6).
-define(OP_PURGE_ACKS, 7).
-define(OP_PUBLISH, 8).
-define(OP_FETCH, 9).
-define(OP_ACK, 10).
-define(OP_REQUEUE, 11).
-define(OP_PEEK, 12).
-define(OP_READ, 13).
-define(OP_FOLD, 14).
-define(OP_SYNC, 15).
-define(OP_SHUTDOWN, 16).
-define(OP_STATS, 17).
-define(OP_DELIVER, 18).
-define(OP_RELEASE, 19).
-define(OP_AUTH, 20).
-define(OP_FAIL_DELIVERY, 21).

%% frames from the sidecar (protocol.ts Push)
-define(REPLY, 100).
-define(CONFIRM, 101).
-define(FAILED, 102).

%% message flags, bits of Flags:8 (messages.ts Flags)
-define(F_PERSISTENT, 1).
-define(F_NEEDS_CONFIRMING, 2).
-define(F_DELIVERED, 4).
-define(F_UNACKED, 8).

%% FETCH's AckRequired:8 (messages.ts FetchMode)
-define(FETCH_NO_ACK, 0).
-define(FETCH_ACK, 1).
-define(FETCH_RESERVE, 2).

%% INIT's Recover:8 (protocol.ts RecoverMode)
-define(RECOVER_NEW, 0).
-define(RECOVER_TERMS, 1).
-define(RECOVER_NON_CLEAN, 2).

%% AUTH's token, and a message id (MsgId:16/binary)
-define(TOKEN_BYTES, 32).
-define(ID_BYTES, 16).
