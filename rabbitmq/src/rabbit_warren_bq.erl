%% Warren's backing queue: RabbitMQ's classic queues keep their messages in
%% Warren's store. Every callback of rabbit_backing_queue forwards to the
%% sidecar through rabbit_warren_sidecar (docs/PROTOCOL.md):
%%
%% - the figures the queue asks for constantly (len, depth, bytes, pending
%%   acks, persistent counts) are kept here and answered locally;
%% - publishes, acks, requeues are asynchronous (no round trip per message);
%%   seq ids, assigned here, are the ack tags;
%% - fetch, drop, purge, peek, read, fold are synchronous;
%% - confirms come back as CONFIRM frames; the owner calls our async callback
%%   with a fun that records the ids; drain_confirmed hands them over.
%%
%% Selected with advanced.config {rabbit, [{backing_queue_module, rabbit_warren_bq}]},
%% so RabbitMQ's priority-queue wrapper still sits on top of it.
%%
%% One source for every supported broker (docs/RABBITMQ-VERSIONS.md): it
%% exports each arity any of 3.10, 4.0 and 4.3 calls, and takes messages as
%% #basic_message{} (3.10) or mc:state() (4.x), told apart at run time. Each
%% broker gets its own build (its own erlc and headers).
%%
%% The bytes of each request and reply are rabbit_warren_frames' business.
%% What stays here (about 900 lines) is one function per callback of the
%% behaviour, each a few lines over the #state{} they share; the behaviour
%% is one module in RabbitMQ's own implementations for the same reason.
-module(rabbit_warren_bq).
-behaviour(rabbit_backing_queue).

-include_lib("rabbit_common/include/rabbit.hrl").
-include("rabbit_warren_protocol.hrl").

-export([start/2, stop/1, init/3, terminate/2, delete_and_terminate/2,
         delete_crashed/1, purge/1, purge_acks/1,
         drain_confirmed/1, dropwhile/2, fetchwhile/4, fetch/2, drop/2,
         ack/2, len/1, is_empty/1, depth/1,
         needs_timeout/1, timeout/1,
         handle_pre_hibernate/1, resume/1, msg_rates/1, info/2, invoke/3,
         is_duplicate/2, zip_msgs_and_acks/4, handle_info/2]).
%% 3.10 (with Flow; mirrored queues' batches, fold, RAM duration, modes)
-export([publish/6, publish_delivered/5, batch_publish/4, batch_publish_delivered/4,
         discard/4, requeue/2, ackfold/4, fold/3,
         set_ram_duration_target/2, ram_duration/1, set_queue_mode/2, set_queue_version/2]).
%% 4.x (no Flow; update_rates instead of RAM duration)
-export([publish/5, publish_delivered/4, discard/3, update_rates/1]).
%% 4.3 (failed deliveries counted; the priority wrapper calls format_state/1)
-export([requeue/3, ackfold/5, format_state/1]).

%% for the owner's confirm funs, operators and tests
-export([confirmed/4, queue_key/2, queue_identity/1]).

-define(PAGE, 256).

-define(BATCH(H), {rabbit_warren_bq_batch, H}).

-record(s, {
    owner,                 %% pid of rabbit_warren_sidecar
    handle,                %% session handle in the sidecar
    qname,                 %% #resource{} as given to init (priority sub-queue name included)
    durable,
    async_cb,
    len = 0,               %% ready messages
    bytes = 0,             %% ready bytes (message_bytes_ready)
    unacked = #{},         %% Seq => {MsgId, Size, IsPersistent, HasExpiry}
    unacked_bytes = 0,
    pcount = 0,            %% persistent messages (ready + unacked)
    pbytes = 0,
    next_seq = 0,
    read_ahead = 0, %% max messages reserved ahead (setting read_ahead; 0/1 = off)
    ahead = [],            %% reserved entries, in order: ready for RabbitMQ, pending acks in the sidecar;
                           %% [] or {ahead, Box} (see put_ahead/2)
    expiring = 0,          %% ready messages with an expiry (0: dropwhile needs no round trip)
    max_frame,             %% the link's frame limit (rabbit_warren_sidecar:max_frame/0)
    counts_deliveries = false, %% annotate delivery_count on messages handed out (4.3 semantics)
    confirmed = [],        %% lists of confirmed msg ids, drained by drain_confirmed
    disk_reads = 0,
    disk_writes = 0
}).

%%----------------------------------------------------------------------------
%% lifecycle

%% start/2 gets names only (the priority wrapper's sub-queues as <<Name,0,P>>),
%% so each name is matched against the durable queue records to find the
%% queue(s) it stands for: a name that is both a plain queue's and a priority
%% sub-queue's stands for both, and is clean only if both are.
start(VHost, QNames) ->
    Dir = vhost_dir(VHost),
    Cands = [start_identities(VHost, QName) || QName <- QNames],
    Pairs = lists:ukeysort(1, lists:append(Cands)),
    Body = rabbit_warren_frames:start_body(VHost, Dir, Pairs),
    Reply = case rabbit_warren_sidecar:call(global, ?OP_START, Body, long_timeout()) of
                {ok, R} -> R;
                {error, E} -> error({warren_error, start, VHost, E})
            end,
    Cleans = case rabbit_warren_frames:decode_start_reply(Reply, length(Pairs)) of
                 {ok, Cs} -> Cs;
                 error -> error({warren_bad_reply, start, Reply})
             end,
    IsClean = maps:from_list(lists:zip([K || {K, _} <- Pairs], Cleans)),
    Terms = [case lists:all(fun({K, _}) -> maps:get(K, IsClean) end, C) of
                 true -> [{warren_clean, true}];
                 false -> non_clean_shutdown
             end || C <- Cands],
    rabbit_log:info("Warren: vhost '~ts' started with ~b durable queues (~b clean)",
                    [VHost, length(Terms), length([T || T = [_] <- Terms])]),
    {ok, Terms}.

stop(_VHost) ->
    ok.

init(Q, Recover, AsyncCb) ->
    QName = #resource{virtual_host = VHost} = amqqueue:get_name(Q),
    Durable = amqqueue:is_durable(Q),
    Mode = case Recover of
               new -> ?RECOVER_NEW;
               non_clean_shutdown -> ?RECOVER_NON_CLEAN;
               Terms when is_list(Terms) -> ?RECOVER_TERMS
           end,
    Body = rabbit_warren_frames:init_body(VHost, vhost_dir(VHost), queue_key(VHost, queue_identity(Q)),
                                          printable_name(Q), Durable, Mode),
    Owner = owner(),
    Deadline = erlang:monotonic_time(millisecond)
        + rabbit_warren_config:get(init_retry_ms),
    Reply = case init_call(QName, Body, AsyncCb, Deadline, 100) of
                {ok, R} -> R;
                {error, E} -> exit({warren_error, init, E})
            end,
    case rabbit_warren_frames:decode_init_reply(Reply) of
        {ok, #{handle := Handle, len := Len, bytes := Bytes, pcount := PC, pbytes := PB,
               next_seq := NextSeq, expiring := Expiring}} ->
            #s{owner = Owner, handle = Handle, qname = QName, durable = Durable,
               async_cb = AsyncCb, len = Len, bytes = Bytes, pcount = PC, pbytes = PB,
               next_seq = NextSeq, expiring = Expiring,
               max_frame = rabbit_warren_sidecar:max_frame(),
               counts_deliveries = counts_deliveries(),
               read_ahead = rabbit_warren_config:get(read_ahead)};
        error ->
            exit({warren_bad_reply, init, Reply})
    end.

%% A store that cannot open yet (a full disk, an I/O error) fails INIT. The
%% queue process would be restarted at once and fail again, and RabbitMQ gives
%% a queue up for good after a few restarts in a row: retry here for a while
%% (app env init_retry_ms) before failing, so that a queue outlives a full
%% disk and serves again once there is space.
init_call(QName, Body, AsyncCb, Deadline, Delay) ->
    case rabbit_warren_sidecar:call({init, AsyncCb}, ?OP_INIT, Body, long_timeout()) of
        {error, E} = Err ->
            case erlang:monotonic_time(millisecond) + Delay < Deadline of
                true ->
                    Delay =:= 100 andalso
                        rabbit_log:warning("Warren: ~ts: init failed (~ts); retrying for a while",
                                           [rabbit_misc:rs(QName), E]),
                    timer:sleep(Delay),
                    init_call(QName, Body, AsyncCb, Deadline, min(Delay * 2, 1000));
                false ->
                    Err
            end;
        Reply ->
            Reply
    end.

terminate(_Reason, S0) ->
    S = release(S0),
    ok = sync(S, ?OP_TERMINATE, <<>>, long_timeout()),
    %% transient messages are gone, persistent pending acks are ready again
    S#s{unacked = #{}, unacked_bytes = 0}.

delete_and_terminate(_Reason, S) ->
    ok = sync(S, ?OP_DELETE_AND_TERMINATE, <<>>, long_timeout()),
    S#s{len = 0, bytes = 0, expiring = 0, unacked = #{}, unacked_bytes = 0, pcount = 0, pbytes = 0}.

delete_crashed(Q) ->
    #resource{virtual_host = VHost} = amqqueue:get_name(Q),
    Body = rabbit_warren_frames:delete_crashed_body(VHost, vhost_dir(VHost),
                                                    queue_key(VHost, queue_identity(Q))),
    case rabbit_warren_sidecar:call(global, ?OP_DELETE_CRASHED, Body, long_timeout()) of
        {ok, _} -> ok;
        {error, E} -> error({warren_error, delete_crashed, E})
    end.

%%----------------------------------------------------------------------------
%% publishing

publish(Msg, Props, IsDelivered, ChPid, Flow, S) ->
    {_Seq, S1} = publish1(Msg, Props, IsDelivered, false, ChPid, Flow, S),
    S1.

publish_delivered(Msg, Props, ChPid, Flow, S) ->
    publish1(Msg, Props, true, true, ChPid, Flow, S).

%% 4.x has no Flow argument, yet the queue still takes part in credit flow
%% with its publishers: every publish is flow-controlled, so a sidecar that
%% falls behind blocks the queue and through it the channels.
publish(Msg, Props, IsDelivered, ChPid, S) ->
    publish(Msg, Props, IsDelivered, ChPid, flow, S).

publish_delivered(Msg, Props, ChPid, S) ->
    publish_delivered(Msg, Props, ChPid, flow, S).

batch_publish(Publishes, ChPid, Flow, S) ->
    lists:foldl(fun({Msg, Props, IsDelivered}, Acc) ->
                        publish(Msg, Props, IsDelivered, ChPid, Flow, Acc)
                end, S, Publishes).

batch_publish_delivered(Publishes, ChPid, Flow, S) ->
    {Tags, S1} = lists:foldl(fun({Msg, Props}, {Ts, Acc}) ->
                                     {T, Acc1} = publish_delivered(Msg, Props, ChPid, Flow, Acc),
                                     {[T | Ts], Acc1}
                             end, {[], S}, Publishes),
    {lists:reverse(Tags), S1}.

publish1(Msg, #message_properties{expiry = Expiry, needs_confirming = NC, size = Size},
         IsDelivered, Unacked, _ChPid, Flow,
         S = #s{owner = Owner, handle = H, next_seq = Seq, durable = Durable}) ->
    MsgId = message_id(Msg),
    IsPersistent = is_persistent(Msg),
    Blob = term_to_binary(prepare_to_store(Msg)),
    Flags = flag(IsPersistent, ?F_PERSISTENT) bor flag(NC =:= true, ?F_NEEDS_CONFIRMING)
        bor flag(IsDelivered =:= true, ?F_DELIVERED) bor flag(Unacked, ?F_UNACKED),
    Frame = rabbit_warren_frames:publish_frame(H, Seq, Flags, arrived_count(Msg, S), Expiry, Size,
                                               MsgId, Blob),
    %% The sidecar would drop the whole connection (every queue) for an
    %% oversized frame: fail this queue alone, before anything is counted.
    byte_size(Blob) + 64 =< S#s.max_frame orelse
        error({warren_message_too_large, S#s.qname, byte_size(Blob), S#s.max_frame}),
    Flow =:= flow andalso credit_flow:send(Owner),
    async(S, Flow, Frame),
    Persistent = Durable andalso IsPersistent,
    S1 = S#s{next_seq = Seq + 1,
             pcount = S#s.pcount + flag(Persistent, 1),
             pbytes = S#s.pbytes + flag(Persistent, Size),
             disk_writes = S#s.disk_writes + flag(Persistent, 1)},
    HasExpiry = Expiry =/= undefined,
    case Unacked of
        false ->
            {Seq, S1#s{len = S1#s.len + 1, bytes = S1#s.bytes + Size,
                       expiring = S1#s.expiring + flag(HasExpiry, 1)}};
        true ->
            {Seq, S1#s{unacked = maps:put(Seq, {MsgId, Size, Persistent, HasExpiry}, S1#s.unacked),
                       unacked_bytes = S1#s.unacked_bytes + Size}}
    end.

discard(_MsgId, _ChPid, _Flow, S) ->
    S.

discard(_Msg, _ChPid, S) ->
    S.

drain_confirmed(S = #s{confirmed = []}) ->
    {[], S};
drain_confirmed(S = #s{confirmed = C}) ->
    {lists:append(C), S#s{confirmed = []}}.

%% Called (through the queue's async callback) by the owner on CONFIRM.
confirmed(?MODULE, Handle, MsgIds, S = #s{handle = Handle, confirmed = C}) ->
    S#s{confirmed = [MsgIds | C]};
confirmed(_Mod, _Handle, _MsgIds, S) ->
    S.

%%----------------------------------------------------------------------------
%% taking messages out

dropwhile(Pred, S) ->
    {Props, undefined, S1} = remove_while(Pred, drop, undefined, undefined, S),
    {Props, S1}.

fetchwhile(Pred, Fun, Acc, S) ->
    remove_while(Pred, fetch, Fun, Acc, S).

%% Peek at the heads, test them here (the predicate has side effects: it is
%% called once per message removed, plus once for the first one kept), then
%% remove the ones that passed in one call. The queue process is the only
%% writer, so nothing changes in between.
remove_while(Pred, Mode, Fun, Acc, S) ->
    remove_while(Pred, Mode, Fun, Acc, S, 1).

remove_while(_Pred, _Mode, _Fun, Acc, S = #s{len = 0}, _Page) ->
    {undefined, Acc, S};
remove_while(Pred, Mode, Fun, Acc, S = #s{ahead = {ahead, Box}}, Page) ->
    [Entry = {_, F, E, Sz, _, _, _} | Rest] = Box(),
    %% The head is reserved here already: test it without a round trip, and
    %% hand it out if it goes (the predicate is called once per message).
    P = props(E, Sz, F),
    case Pred(P) of
        false ->
            {P, Acc, S};
        true ->
            S1 = put_ahead(Rest, S),
            {Acc1, S2} = case Mode of
                             drop ->
                                 {_, S3} = hand_out(Entry, false, false, S1),
                                 {Acc, S3};
                             fetch ->
                                 {[{Msg, _IsDelivered, Tag}], S3} = hand_out(Entry, true, true, S1),
                                 {Fun(Msg, Tag, Acc), S3}
                         end,
            remove_while(Pred, Mode, Fun, Acc1, S2, Page)
    end;
remove_while(Pred, Mode, Fun, Acc, S = #s{expiring = 0}, Page) ->
    %% No ready message has an expiry (the queue calls dropwhile after every
    %% fetch, TTL or not): answer without a round trip when the predicate
    %% keeps a message without expiry. The queue only uses the expiry of the
    %% properties returned.
    P = #message_properties{expiry = undefined, needs_confirming = false, size = 0},
    case Pred(P) of
        false -> {P, Acc, S};
        true -> remove_while1(Pred, Mode, Fun, Acc, S, Page)
    end;
remove_while(Pred, Mode, Fun, Acc, S, Page) ->
    remove_while1(Pred, Mode, Fun, Acc, S, Page).

%% Pages grow from 1 (the head is usually not expired) to ?PAGE.
remove_while1(Pred, Mode, Fun, Acc, S0 = #s{len = Len}, Page) ->
    S = release(S0),
    Max = min(Len, Page),
    {ok, Reply} = sync_reply(S, ?OP_PEEK, rabbit_warren_frames:peek_body(Max)),
    {N, Heads} = rabbit_warren_frames:decode_peek_reply(Reply),
    Props = [{props(E, Sz, F)} || {E, Sz, F} <- Heads],
    %% Bodies come back in one reply: fetch no more than a frame holds.
    Budget = case Mode of
                 fetch -> reply_budget(S);
                 drop -> infinity
             end,
    {Pass, Stop} = take_while(Pred, Props, 0, 0, Budget),
    {Acc1, S1} = case Pass of
                     0 -> {Acc, S};
                     _ when Mode =:= drop ->
                         {_Ids, S2} = fetch_n(Pass, false, false, S),
                         {Acc, S2};
                     _ ->
                         {Entries, S2} = fetch_n(Pass, true, true, S),
                         {lists:foldl(fun({Msg, _IsDelivered, Tag}, A) -> Fun(Msg, Tag, A) end,
                                      Acc, Entries), S2}
                 end,
    case Stop of
        {stop, P} -> {P, Acc1, S1};
        none when N =:= 0 -> {undefined, Acc1, S1};
        none -> remove_while1(Pred, Mode, Fun, Acc1, S1, min(?PAGE, Page * 4))
    end.

%% The predicate is not called on a message past the byte budget: the next
%% page starts with it.
take_while(_Pred, [], N, _Bytes, _Budget) -> {N, none};
take_while(_Pred, [{#message_properties{size = Sz}} | _], N, Bytes, Budget)
  when N > 0, Budget =/= infinity, Bytes + Sz > Budget ->
    {N, none};
take_while(Pred, [{P = #message_properties{size = Sz}} | Rest], N, Bytes, Budget) ->
    case Pred(P) of
        true -> take_while(Pred, Rest, N + 1, Bytes + Sz, Budget);
        false -> {N, {stop, P}}
    end.

fetch(_AckRequired, S = #s{len = 0}) ->
    {empty, S};
fetch(AckRequired, S) ->
    case take_ahead(S) of
        {none, _} ->
            {[{Msg, IsDelivered, Tag}], S1} = fetch_n(1, AckRequired, true, S),
            {{Msg, IsDelivered, Tag}, S1};
        {Entry, S1} ->
            {[{Msg, IsDelivered, Tag}], S2} = hand_out(Entry, AckRequired, true, S1),
            {{Msg, IsDelivered, Tag}, S2}
    end.

drop(_AckRequired, S = #s{len = 0}) ->
    {empty, S};
drop(AckRequired, S) ->
    case take_ahead(S) of
        {none, _} ->
            {[{MsgId, _IsDelivered, Tag}], S1} = fetch_n(1, AckRequired, false, S),
            {{MsgId, Tag}, S1};
        {Entry, S1} ->
            {[{MsgId, _IsDelivered, Tag}], S2} = hand_out(Entry, AckRequired, false, S1),
            {{MsgId, Tag}, S2}
    end.

%% Read-ahead (app env read_ahead > 1): one FETCH reserves up to read_ahead
%% messages (bounded by read_ahead_bytes at the queue's average size) with
%% their bodies; they stay ready for RabbitMQ and are handed out one by one
%% (DELIVER when the consumer must ack, ACK when not). Anything that needs the
%% sidecar's ready list as RabbitMQ sees it (requeue, purge, peek, fold,
%% terminate) first RELEASEs what is still reserved, flags unchanged.
take_ahead(S = #s{ahead = {ahead, Box}}) ->
    [E | Rest] = Box(),
    {E, put_ahead(Rest, S)};
take_ahead(S = #s{read_ahead = RA, len = Len, bytes = Bytes}) when RA > 1, Len > 1 ->
    Avg = max(1, Bytes div Len),
    N = lists:min([RA, Len, max(1, read_ahead_bytes() div Avg)]),
    case N > 1 of
        false ->
            {none, S};
        true ->
            {ok, Reply} = sync_reply(S, ?OP_FETCH, rabbit_warren_frames:fetch_body(N, reserve, true)),
            case rabbit_warren_frames:decode_entries(Reply) of
                [E | Rest] -> {E, put_ahead(Rest, S)};
                [] -> exit({warren_out_of_sync, S#s.qname, {expected, N}, {got, 0}})
            end
    end;
take_ahead(S) ->
    {none, S}.

hand_out(Entry = {Seq, _, _, _, _, _, _}, AckRequired, WithBody, S) ->
    batch(S, case AckRequired of true -> deliver; false -> ack end, [Seq]),
    taken([Entry], AckRequired, WithBody, S).

release(S = #s{ahead = []}) ->
    S;
release(S = #s{ahead = {ahead, Box}, handle = H}) ->
    Ahead = Box(),
    Seqs = [Seq || {Seq, _, _, _, _, _, _} <- Ahead],
    async(S, noflow, rabbit_warren_frames:seqs_frame(?OP_RELEASE, H, Seqs)),
    S#s{ahead = []}.

%% The reserved entries carry message bodies. They are kept inside a closure
%% because RabbitMQ 3.10 and 4.0 print a crashed queue's whole state: a
%% closure prints as #Fun<...>, a list of bodies byte by byte (64 bodies of
%% 5 KB made 17,000 log lines a queue, and seconds of formatting before the
%% queue could restart). 4.3 calls format_state/1 instead.
put_ahead([], S) -> S#s{ahead = []};
put_ahead(Entries, S) -> S#s{ahead = {ahead, fun() -> Entries end}}.

read_ahead_bytes() ->
    rabbit_warren_config:get(read_ahead_bytes).

%% FETCH up to N ready messages; returns [{Msg or MsgId, IsDelivered, Tag}].
fetch_n(N, AckRequired, WithBody, S) ->
    {ok, Reply} = sync_reply(S, ?OP_FETCH, rabbit_warren_frames:fetch_body(N, AckRequired, WithBody)),
    Entries = rabbit_warren_frames:decode_entries(Reply),
    %% Our figures say N ready messages are there; fewer means the sidecar
    %% dropped some (an unreadable body): re-init from its figures.
    length(Entries) =:= N orelse
        exit({warren_out_of_sync, S#s.qname, {expected, N}, {got, length(Entries)}}),
    taken(Entries, AckRequired, WithBody, S).

%% Local figures for entries that left the ready list:
%% [{Msg or MsgId, IsDelivered, Tag}].
taken(Entries, AckRequired, WithBody, S = #s{durable = Durable}) ->
    lists:mapfoldl(
      fun({Seq, Flags, Expiry, Size, MsgId, Blob, Count}, Acc) ->
              Persistent = Durable andalso Flags band ?F_PERSISTENT =/= 0,
              HasExpiry = Expiry =/= -1,
              Len1 = Acc#s.len - 1,
              Acc1 = Acc#s{len = Len1, bytes = Acc#s.bytes - Size,
                           expiring = case Len1 of
                                          0 -> 0;
                                          _ -> Acc#s.expiring - flag(HasExpiry, 1)
                                      end},
              Acc2 = case AckRequired of
                         true ->
                             Acc1#s{unacked = maps:put(Seq, {MsgId, Size, Persistent, HasExpiry},
                                                       Acc1#s.unacked),
                                    unacked_bytes = Acc1#s.unacked_bytes + Size};
                         false ->
                             Acc1#s{pcount = Acc1#s.pcount - flag(Persistent, 1),
                                    pbytes = Acc1#s.pbytes - flag(Persistent, Size)}
                     end,
              Tag = case AckRequired of true -> Seq; false -> undefined end,
              IsDelivered = Flags band ?F_DELIVERED =/= 0,
              case WithBody of
                  true ->
                      {{from_blob(Blob, Count, Acc2), IsDelivered, Tag},
                       Acc2#s{disk_reads = Acc2#s.disk_reads + flag(Persistent, 1)}};
                  false ->
                      {{MsgId, IsDelivered, Tag}, Acc2}
              end
      end, S, Entries).

ack([], S) ->
    {[], S};
ack(Tags, S) ->
    {Ids, Taken, S1} = take_unacked(Tags, S),
    S2 = lists:foldl(fun({_Seq, {_Id, Size, P, _E}}, Acc) ->
                             Acc#s{pcount = Acc#s.pcount - flag(P, 1),
                                   pbytes = Acc#s.pbytes - flag(P, Size)}
                     end, S1, Taken),
    batch(S2, ack, [Seq || {Seq, _} <- Taken]),
    {Ids, S2}.

requeue(Tags, S) ->
    requeue(Tags, false, S).

%% 4.3: DelFailed (a channel closed with the message unacked, an AMQP 1.0
%% modified{delivery_failed}) counts a failed delivery first.
requeue([], _DelFailed, S) ->
    {[], S};
requeue(Tags, DelFailed, S0) ->
    S = #s{handle = H} = release(S0),
    {Ids, Taken, S1} = take_unacked(Tags, S),
    fail_deliveries(S1, DelFailed, [Seq || {Seq, _} <- Taken]),
    S2 = lists:foldl(fun({_Seq, {_Id, Size, _P, E}}, Acc) ->
                             Acc#s{len = Acc#s.len + 1, bytes = Acc#s.bytes + Size,
                                   expiring = Acc#s.expiring + flag(E, 1)}
                     end, S1, Taken),
    async(S2, noflow, rabbit_warren_frames:seqs_frame(?OP_REQUEUE, H, [Seq || {Seq, _} <- Taken])),
    {Ids, S2}.

%% Removes the tags from the pending acks: {MsgIds in tag order,
%% [{Seq, {MsgId, Size, IsPersistent}}] in tag order, S}. Unknown tags (never
%% expected) are skipped.
take_unacked(Tags, S = #s{unacked = U0}) ->
    {Ids, Taken, U, Bytes} =
        lists:foldl(fun(Tag, {I, T, U1, B}) ->
                            case maps:take(Tag, U1) of
                                {Val = {Id, Size, _, _}, U2} -> {[Id | I], [{Tag, Val} | T], U2, B + Size};
                                error -> {I, T, U1, B}
                            end
                    end, {[], [], U0, 0}, Tags),
    {lists:reverse(Ids), lists:reverse(Taken),
     S#s{unacked = U, unacked_bytes = S#s.unacked_bytes - Bytes}}.

ackfold(Fun, Acc, S, Tags) ->
    ackfold1(Fun, Acc, S, Tags).

%% 4.3: messages dead-lettered after a failed delivery carry the new count.
ackfold(Fun, Acc, S, Tags, DelFailed) ->
    fail_deliveries(S, DelFailed, [T || T <- Tags, maps:is_key(T, S#s.unacked)]),
    ackfold1(Fun, Acc, S, Tags).

fail_deliveries(S = #s{handle = H, counts_deliveries = true}, true, Seqs = [_ | _]) ->
    async(S, noflow, rabbit_warren_frames:seqs_frame(?OP_FAIL_DELIVERY, H, Seqs));
fail_deliveries(_S, _DelFailed, _Seqs) ->
    ok.

ackfold1(_Fun, Acc, S, []) ->
    {Acc, S};
ackfold1(Fun, Acc, S, Tags) ->
    {Page, Rest} = read_page(Tags, S#s.unacked, 0, 0, reply_budget(S), []),
    {ok, Reply} = sync_reply(S, ?OP_READ, rabbit_warren_frames:read_body(Page)),
    Acc1 = lists:foldl(fun({Seq, _F, _E, _Sz, _Id, Blob, Count}, A) -> Fun(from_blob(Blob, Count, S), Seq, A) end,
                       Acc, rabbit_warren_frames:decode_entries(Reply)),
    ackfold1(Fun, Acc1, S, Rest).

%% Up to ?PAGE tags whose messages fit in one reply (at least one tag).
read_page([], _U, _N, _Bytes, _Budget, Acc) ->
    {lists:reverse(Acc), []};
read_page(Tags, _U, ?PAGE, _Bytes, _Budget, Acc) ->
    {lists:reverse(Acc), Tags};
read_page(Tags = [T | Rest], U, N, Bytes, Budget, Acc) ->
    Sz = case maps:find(T, U) of
             {ok, {_Id, Size, _, _}} -> Size;
             error -> 0
         end,
    case N > 0 andalso Bytes + Sz > Budget of
        true -> {lists:reverse(Acc), Tags};
        false -> read_page(Rest, U, N + 1, Bytes + Sz, Budget, [T | Acc])
    end.

%% Bytes of message sizes one reply with bodies may carry, as the sidecar
%% counts them: half the frame limit, leaving room for properties.
reply_budget(#s{max_frame = MaxFrame}) ->
    MaxFrame div 2.

fold(Fun, Acc, S) ->
    fold1(Fun, Acc, release(S), -1).

fold1(Fun, Acc, S, After) ->
    {ok, Reply} = sync_reply(S, ?OP_FOLD, rabbit_warren_frames:fold_body(After, ?PAGE)),
    case rabbit_warren_frames:decode_entries(Reply) of
        [] -> {Acc, S};
        Entries -> fold_entries(Fun, Acc, S, Entries, After)
    end.

fold_entries(Fun, Acc, S, [], After) ->
    fold1(Fun, Acc, S, After);
fold_entries(Fun, Acc, S, [{Seq, Flags, Expiry, Size, _Id, Blob, Count} | Rest], _After) ->
    case Fun(from_blob(Blob, Count, S), props(Expiry, Size, Flags), Flags band ?F_UNACKED =/= 0, Acc) of
        {stop, Acc1} -> {Acc1, S};
        {cont, Acc1} -> fold_entries(Fun, Acc1, S, Rest, Seq)
    end.

purge(S0 = #s{len = Len}) ->
    S = release(S0),
    %% A purge streams the whole queue index: the long timeout, as for terminate.
    {ok, Reply} = sync_reply(S, ?OP_PURGE, <<>>, long_timeout()),
    {_Count, PC, PB} = rabbit_warren_frames:decode_purge_reply(Reply),
    {Len, S#s{len = 0, bytes = 0, expiring = 0, pcount = S#s.pcount - PC, pbytes = S#s.pbytes - PB}}.

purge_acks(S = #s{unacked = U}) when map_size(U) =:= 0 ->
    S;
purge_acks(S0) ->
    S = #s{handle = H, unacked = U} = release(S0),
    async(S, noflow, rabbit_warren_frames:purge_acks_frame(H)),
    {PC, PB} = maps:fold(fun(_Seq, {_Id, Size, true, _}, {C, B}) -> {C + 1, B + Size};
                            (_Seq, _, CB) -> CB
                         end, {0, 0}, U),
    S#s{unacked = #{}, unacked_bytes = 0, pcount = S#s.pcount - PC, pbytes = S#s.pbytes - PB}.

%%----------------------------------------------------------------------------
%% figures, answered locally

len(#s{len = Len}) -> Len.

is_empty(#s{len = Len}) -> Len =:= 0.

depth(#s{len = Len, unacked = U}) -> Len + map_size(U).

set_ram_duration_target(_Target, S) -> S.

ram_duration(S) -> {infinity, S}.

update_rates(S) -> S.

%% Batched DELIVER/ACK go out as soon as the queue process has nothing else
%% to do (timed: RabbitMQ calls timeout/1 when its mailbox is empty).
needs_timeout(#s{handle = H}) ->
    case get(?BATCH(H)) of
        undefined -> false;
        _ -> timed
    end.

timeout(S) ->
    flush_batch(S),
    S.

%% An idle queue does not keep read-ahead bodies in memory.
handle_pre_hibernate(S) ->
    flush_batch(S),
    release(S).

resume(S) -> S.

msg_rates(_S) -> {0.0, 0.0}.

%% Bodies are on disk (persistent ones) or in the sidecar's memory (transient
%% ones); none are held in this process.
info(messages_ram, S) -> depth(S) - S#s.pcount;
info(messages_ready_ram, #s{len = L}) -> L;
info(messages_unacknowledged_ram, #s{unacked = U}) -> map_size(U);
info(messages_persistent, #s{pcount = C}) -> C;
info(messages_paged_out, #s{pcount = C}) -> C;
info(message_bytes, #s{bytes = B, unacked_bytes = UB}) -> B + UB;
info(message_bytes_ready, #s{bytes = B}) -> B;
info(message_bytes_unacknowledged, #s{unacked_bytes = UB}) -> UB;
info(message_bytes_ram, S = #s{pbytes = PB}) -> info(message_bytes, S) - PB;
info(message_bytes_persistent, #s{pbytes = PB}) -> PB;
info(message_bytes_paged_out, #s{pbytes = PB}) -> PB;
info(head_message_timestamp, _S) -> '';
info(disk_reads, #s{disk_reads = R}) -> R;
info(disk_writes, #s{disk_writes = W}) -> W;
%% What the management API shows as the queue's backing_queue_status: RabbitMQ's
%% usual keys, then Warren's own (its session in the sidecar, the read-ahead
%% window and what it holds, the messages that carry an expiry).
info(backing_queue_status, S = #s{len = L, unacked = U, next_seq = NS, pcount = PC,
                                  handle = H, read_ahead = RA, ahead = Ahead, expiring = E}) ->
    Reserved = case Ahead of [] -> 0; {ahead, Box} -> length(Box()) end,
    [{mode, lazy}, {len, L}, {pending_acks, map_size(U)}, {next_seq_id, NS},
     {persistent_count, PC}, {message_bytes, info(message_bytes, S)},
     {backing_queue, warren}, {warren_session, H}, {warren_read_ahead, RA},
     {warren_reserved_ahead, Reserved}, {warren_expiring, E},
     {warren_persistent_bytes, S#s.pbytes}];
info(_Item, _S) -> ''.

invoke(?MODULE, Fun, S) -> Fun(?MODULE, S);
invoke(_Mod, _Fun, S) -> S.

is_duplicate(_Msg, S) -> {false, S}.

set_queue_mode(_Mode, S) -> S.

set_queue_version(_Version, S) -> S.

zip_msgs_and_acks(Msgs, AckTags, Acc, _S) ->
    lists:foldl(fun({{Msg, _Props}, AckTag}, A) -> [{message_id(Msg), AckTag} | A] end,
                Acc, lists:zip(Msgs, AckTags)).

handle_info(_Msg, S) -> S.

%% For crash reports: no message bodies, no per-message maps.
format_state(S = #s{ahead = Ahead, unacked = U}) ->
    Reserved = case Ahead of [] -> 0; {ahead, Box} -> length(Box()) end,
    S#s{ahead = {reserved, Reserved}, unacked = {pending_acks, map_size(U)}}.

%%----------------------------------------------------------------------------
%% helpers

owner() ->
    case whereis(rabbit_warren_sidecar) of
        undefined -> exit({sidecar_down, warren_not_running});
        Pid -> Pid
    end.

%% Every frame of a session goes out after the session's batch.
async(S, Flow, Frame) ->
    flush_batch(S),
    send(S, Flow, Frame).

send(#s{owner = Owner, handle = H}, Flow, Frame) ->
    %% A dead owner means our session is gone with it: restart and re-init.
    case is_process_alive(Owner) of
        true -> rabbit_warren_sidecar:cast(Owner, H, Flow, Frame);
        false -> exit({sidecar_down, owner_restarted})
    end.

%% DELIVER and ACK of messages handed out or acked one at a time are batched
%% per session and sent before any other frame of the session, or when the
%% queue process goes idle: one frame for many messages. In the process
%% dictionary, keyed by session, because one queue process holds several
%% sessions under the priority-queue wrapper. Delaying them is safe: a
%% crash brings every message back redelivered anyway, and an ack still in a
%% batch at a crash is an ack in flight.
batch(#s{handle = H}, Kind, Seqs) ->
    {D, A} = case get(?BATCH(H)) of
                 undefined -> {[], []};
                 V -> V
             end,
    put(?BATCH(H), case Kind of
                       deliver -> {lists:reverse(Seqs, D), A};
                       ack -> {D, lists:reverse(Seqs, A)}
                   end),
    ok.

%% Deliveries first: a message acked in the same batch was delivered before.
flush_batch(S = #s{handle = H}) ->
    case erase(?BATCH(H)) of
        undefined ->
            ok;
        {D, A} ->
            D =:= [] orelse
                send(S, noflow, rabbit_warren_frames:seqs_frame(?OP_DELIVER, H, lists:reverse(D))),
            A =:= [] orelse
                send(S, noflow, rabbit_warren_frames:seqs_frame(?OP_ACK, H, lists:reverse(A))),
            ok
    end.

sync(S, Op, Body, Timeout) ->
    flush_batch(S),
    case rabbit_warren_sidecar:call({queue, S#s.handle}, Op,
                                    rabbit_warren_frames:session_body(S#s.handle, Body), Timeout) of
        {ok, _} -> ok;
        {error, E} -> exit({warren_error, op_name(Op), E})
    end.

sync_reply(S = #s{handle = H}, Op, Body) ->
    flush_batch(S),
    case rabbit_warren_sidecar:call({queue, H}, Op, rabbit_warren_frames:session_body(H, Body)) of
        {ok, Reply} -> {ok, Reply};
        {error, E} -> exit({warren_error, op_name(Op), S#s.qname, E})
    end.

sync_reply(S = #s{handle = H}, Op, Body, Timeout) ->
    flush_batch(S),
    case rabbit_warren_sidecar:call({queue, H}, Op, rabbit_warren_frames:session_body(H, Body),
                                    Timeout) of
        {ok, Reply} -> {ok, Reply};
        {error, E} -> exit({warren_error, op_name(Op), S#s.qname, E})
    end.

props(Expiry, Size, Flags) ->
    #message_properties{expiry = case Expiry of -1 -> undefined; E -> E end,
                        needs_confirming = Flags band ?F_NEEDS_CONFIRMING =/= 0,
                        size = Size}.

%% 3.10 hands us #basic_message{}, 4.x mc:state() (the mc module also takes
%% old #basic_message{} terms, but 3.10 has no mc module).
message_id(#basic_message{id = Id}) -> Id;
message_id(Msg) -> mc:get_annotation(id, Msg).

is_persistent(#basic_message{is_persistent = P}) -> P =:= true;
is_persistent(Msg) -> mc:is_persistent(Msg).

%% What rabbit_variable_queue writes to its own store, in each version.
prepare_to_store(Msg = #basic_message{content = Content}) ->
    Msg#basic_message{content = rabbit_binary_parser:clear_decoded_content(Content)};
prepare_to_store(Msg) ->
    mc:prepare(store, Msg).

%% The message as handed out; on 4.3 with the delivery count the sidecar
%% keeps for it (0: none; docs/PROTOCOL.md, FAIL_DELIVERY), as the
%% delivery_count annotation, as rabbit_variable_queue does.
from_blob(Blob, Count, #s{counts_deliveries = true}) when Count > 0 ->
    mc:set_annotation(delivery_count, Count, binary_to_term(Blob));
from_blob(Blob, _Count, _S) ->
    binary_to_term(Blob).

%% The delivery count a message arrives with (4.3: a delivery_count
%% annotation, e.g. from a dead-lettering quorum queue), 0 for none.
arrived_count(#basic_message{}, _S) -> 0;
arrived_count(_Msg, #s{counts_deliveries = false}) -> 0;
arrived_count(Msg, _S) ->
    case mc:get_annotation(delivery_count, Msg) of
        N when is_integer(N), N > 0, N < 16#100000000 -> N;
        _ -> 0
    end.

%% RabbitMQ 4.3 counts failed deliveries (requeue/3, ackfold/5) and
%% annotates every message it hands out with the count; earlier versions
%% do not. Decided once per node from the broker's own backing queue.
counts_deliveries() ->
    case persistent_term:get({?MODULE, counts_deliveries}, undefined) of
        undefined ->
            _ = code:ensure_loaded(rabbit_variable_queue),
            V = erlang:function_exported(rabbit_variable_queue, ackfold, 5),
            persistent_term:put({?MODULE, counts_deliveries}, V),
            V;
        V -> V
    end.

flag(true, V) -> V;
flag(false, _) -> 0.


%% What a queue is, unambiguously: {plain, Name}, or {priority, Name, P} for
%% sub-queue P of priority queue Name. The priority wrapper hands us
%% sub-queues named <<Name,0,P>> with the queue's own arguments, so the
%% arguments, not the name, tell which it is: a plain queue may well be
%% called <<"victim",0,1>>.
queue_identity(Q) ->
    #resource{name = Name} = amqqueue:get_name(Q),
    case {is_priority_queue(Q), split_priority(Name)} of
        {true, {Base, P}} -> {priority, Base, P};
        _ -> {plain, Name}
    end.

%% At start/2: the identities a recovered name can stand for, with their keys
%% and the key an earlier Warren gave that name.
start_identities(VHost, QName = #resource{name = Name}) ->
    Plain = case durable_queue(QName) of
                {ok, Q} -> not is_priority_queue(Q);
                _ -> false
            end,
    Prio = case split_priority(Name) of
               {Base, P} ->
                   case durable_queue(QName#resource{name = Base}) of
                       {ok, BQ} -> case is_priority_queue(BQ) of
                                       true -> [{priority, Base, P}];
                                       false -> []
                                   end;
                       _ -> []
                   end;
               none -> []
           end,
    Ids = case {Plain, Prio} of
              {false, []} -> [{plain, Name}];
              _ -> [{plain, Name} || Plain] ++ Prio
          end,
    Legacy = legacy_queue_key(VHost, Name),
    [{queue_key(VHost, Id), Legacy} || Id <- Ids].

split_priority(Name) when byte_size(Name) >= 2 ->
    Sz = byte_size(Name) - 2,
    case Name of
        <<Base:Sz/binary, 0, P:8>> -> {Base, P};
        _ -> none
    end;
split_priority(_) ->
    none.

%% As rabbit_priority_queue decides (an integer x-max-priority argument).
is_priority_queue(Q) ->
    Ints = [long, short, signedint, byte, unsignedbyte, unsignedshort, unsignedint],
    case rabbit_misc:table_lookup(amqqueue:get_arguments(Q), <<"x-max-priority">>) of
        {Type, _} -> lists:member(Type, Ints);
        _ -> false
    end.

durable_queue(QName) ->
    _ = code:ensure_loaded(rabbit_amqqueue),
    case erlang:function_exported(rabbit_amqqueue, lookup_durable_queue, 1) of
        true -> rabbit_amqqueue:lookup_durable_queue(QName);
        false -> rabbit_misc:dirty_read({rabbit_durable_queue, QName})
    end.

%% The key of a queue in the sidecar (PROTOCOL.md): lowercase hex of the first
%% 16 bytes of sha256 of a length-prefixed encoding of (vhost, identity).
queue_key(VHost, Id) ->
    Enc = case Id of
              {plain, N} -> <<0, (byte_size(N)):32, N/binary>>;
              {priority, N, P} -> <<1, (byte_size(N)):32, N/binary, P:8>>
          end,
    hex_key(<<"warren queue key 1", (byte_size(VHost)):32, VHost/binary, Enc/binary>>).

%% Before 0.2 a key hashed <<VHostLen:16, VHost, Name>> with the sub-queue's
%% name, ambiguous; START sends it so the sidecar can move old state.
legacy_queue_key(VHost, Name) ->
    hex_key(<<(byte_size(VHost)):16, VHost/binary, Name/binary>>).

hex_key(Bin) ->
    <<K:16/binary, _/binary>> = crypto:hash(sha256, Bin),
    << <<(hex(D))>> || <<D:4>> <= K >>.

hex(D) when D < 10 -> $0 + D;
hex(D) -> $a + D - 10.

%% Priority sub-queues are named <<Name, 0, P>>; show them readably. Other
%% NUL bytes (a plain queue may have them) are shown escaped.
printable_name(Q) ->
    case queue_identity(Q) of
        {priority, Base, P} -> <<(escape_nul(Base))/binary, " [priority ", (integer_to_binary(P))/binary, "]">>;
        {plain, Name} -> escape_nul(Name)
    end.

escape_nul(Name) ->
    binary:replace(Name, <<0>>, <<"\\0">>, [global]).

vhost_dir(VHost) ->
    unicode:characters_to_binary(rabbit_vhost:msg_store_dir_path(VHost)).

long_timeout() ->
    rabbit_warren_config:get(long_call_timeout).

op_name(?OP_TERMINATE) -> terminate;
op_name(?OP_DELETE_AND_TERMINATE) -> delete_and_terminate;
op_name(?OP_PURGE) -> purge;
op_name(?OP_FETCH) -> fetch;
op_name(?OP_PEEK) -> peek;
op_name(?OP_READ) -> read;
op_name(?OP_FOLD) -> fold;
op_name(?OP_SYNC) -> sync;
op_name(Op) -> Op.
