%% The frames of the plugin <-> sidecar protocol (docs/PROTOCOL.md), as bytes:
%% request frames and bodies built here, replies and pushes from the sidecar
%% parsed here. No state and no I/O: rabbit_warren_bq says what to ask,
%% rabbit_warren_sidecar sends it and routes what comes back.
%%
%% A body is what follows Op:8, ReqId:32 (rabbit_warren_sidecar adds those);
%% a frame is a whole asynchronous request (ReqId 0) or one of the owner's own.
-module(rabbit_warren_frames).

-include("rabbit_warren_protocol.hrl").

%% request bodies (synchronous requests)
-export([start_body/3, init_body/6, delete_crashed_body/3, session_body/2,
         fetch_body/3, peek_body/1, read_body/1, fold_body/2]).
%% whole request frames
-export([request_frame/3, publish_frame/8, seqs_frame/3, purge_acks_frame/1,
         shutdown_frame/1, auth_frame/1]).
%% reply bodies
-export([decode_start_reply/2, decode_init_reply/1, init_reply_handle/1,
         decode_peek_reply/1, decode_purge_reply/1, decode_entries/1]).
%% frames from the sidecar
-export([decode_push/1]).

%%----------------------------------------------------------------------------
%% request bodies

%% START: the vhost, its directory and {Key, LegacyKey} of each queue.
start_body(VHost, Dir, Pairs) ->
    [str(VHost), str(Dir), <<(length(Pairs)):32>>,
     [[str(K), str(L)] || {K, L} <- Pairs]].

%% INIT; Mode is a ?RECOVER_* value.
init_body(VHost, Dir, Key, Name, Durable, Mode) ->
    [str(VHost), str(Dir), str(Key), str(Name), <<(bool(Durable)):8, Mode:8>>].

delete_crashed_body(VHost, Dir, Key) ->
    [str(VHost), str(Dir), str(Key)].

%% A queue's request body starts with its session handle.
session_body(Handle, Body) ->
    [<<Handle:32>>, Body].

%% FETCH (after the handle): AckRequired is true, false or reserve.
fetch_body(Max, AckRequired, WithBody) ->
    <<Max:32, (fetch_mode(AckRequired)):8, (bool(WithBody)):8>>.

peek_body(Max) ->
    <<Max:32>>.

%% READ (after the handle): the pending acks to read.
read_body(Seqs) ->
    seqs(Seqs).

%% FOLD (after the handle): up to Max messages with seq > After (-1: from the start).
fold_body(After, Max) ->
    <<After:64/signed, Max:32>>.

%%----------------------------------------------------------------------------
%% whole request frames

request_frame(Op, ReqId, Body) ->
    [<<Op:8, ReqId:32>>, Body].

%% One message (asynchronous). Expiry: an integer or undefined.
publish_frame(Handle, Seq, Flags, DeliveryCount, Expiry, Size, MsgId, Blob) ->
    [<<?OP_PUBLISH, 0:32, Handle:32, 1:32, Seq:64, Flags:8, DeliveryCount:32,
       (expiry(Expiry)):64/signed, Size:32>>, msg_id(MsgId), <<(byte_size(Blob)):32>>, Blob].

%% ACK, REQUEUE, DELIVER, RELEASE, FAIL_DELIVERY (asynchronous).
seqs_frame(Op, Handle, Seqs) ->
    [<<Op, 0:32, Handle:32>>, seqs(Seqs)].

purge_acks_frame(Handle) ->
    <<?OP_PURGE_ACKS, 0:32, Handle:32>>.

shutdown_frame(ReqId) ->
    <<?OP_SHUTDOWN, ReqId:32>>.

%% The first frame on a connection.
auth_frame(Token) ->
    <<?OP_AUTH, 0:32, Token/binary>>.

%%----------------------------------------------------------------------------
%% reply bodies

%% START: {ok, [IsClean]} for the N queues asked about, or error.
decode_start_reply(<<N:32, Clean/binary>>, Expected) when N =:= Expected, byte_size(Clean) =:= N ->
    {ok, [C =:= 1 || <<C:8>> <= Clean]};
decode_start_reply(_Reply, _N) ->
    error.

decode_init_reply(<<Handle:32, Len:32, Bytes:64, PC:32, PB:64, NextSeq:64, Expiring:32>>) ->
    {ok, #{handle => Handle, len => Len, bytes => Bytes, pcount => PC, pbytes => PB,
           next_seq => NextSeq, expiring => Expiring}};
decode_init_reply(_Reply) ->
    error.

%% The session handle a successful INIT reply starts with.
init_reply_handle(<<Handle:32, _/binary>>) ->
    Handle.

%% PEEK: {N, [{Expiry, Size, Flags}]}.
decode_peek_reply(<<N:32, Heads/binary>>) ->
    {N, [{E, Sz, F} || <<E:64/signed, Sz:32, F:8>> <= Heads]}.

%% PURGE: {Count, PersistentCount, PersistentBytes} removed.
decode_purge_reply(<<Count:32, PC:32, PB:64>>) ->
    {Count, PC, PB}.

%% FETCH, READ, FOLD: [{Seq, Flags, Expiry, Size, MsgId, Blob, DeliveryCount}].
decode_entries(<<N:32, Rest/binary>>) ->
    entries(N, Rest, []).

entries(0, <<>>, Acc) ->
    lists:reverse(Acc);
entries(N, <<Seq:64, Flags:8, Count:32, Expiry:64/signed, Size:32, MsgId:?ID_BYTES/binary,
             BlobLen:32, Blob:BlobLen/binary, Rest/binary>>, Acc) ->
    entries(N - 1, Rest, [{Seq, Flags, Expiry, Size, MsgId, Blob, Count} | Acc]).

%%----------------------------------------------------------------------------
%% frames from the sidecar

%% {reply, ReqId, Status, Body} | {confirm, Handle, [MsgId]} |
%% {failed, Handle, Message} | malformed
decode_push(<<?REPLY, ReqId:32, Status:8, Body/binary>>) ->
    {reply, ReqId, Status, Body};
decode_push(<<?CONFIRM, Handle:32, N:32, Ids/binary>>) when byte_size(Ids) =:= N * ?ID_BYTES ->
    {confirm, Handle, [Id || <<Id:?ID_BYTES/binary>> <= Ids]};
decode_push(<<?FAILED, Handle:32, Msg/binary>>) ->
    {failed, Handle, Msg};
decode_push(_Other) ->
    malformed.

%%----------------------------------------------------------------------------
%% encodings (docs/PROTOCOL.md, "Common encodings")

seqs(Seqs) ->
    [<<(length(Seqs)):32>>, [<<Seq:64>> || Seq <- Seqs]].

fetch_mode(false) -> ?FETCH_NO_ACK;
fetch_mode(true) -> ?FETCH_ACK;
fetch_mode(reserve) -> ?FETCH_RESERVE.

msg_id(Id) when is_binary(Id), byte_size(Id) =:= ?ID_BYTES -> Id;
msg_id(Id) -> error({warren_bad_msg_id, Id}).

expiry(undefined) -> -1;
expiry(E) when is_integer(E) -> E.

bool(true) -> 1;
bool(false) -> 0.

str(S) when is_list(S) -> str(unicode:characters_to_binary(S));
str(B) when is_binary(B), byte_size(B) < 65536 -> [<<(byte_size(B)):16>>, B].
