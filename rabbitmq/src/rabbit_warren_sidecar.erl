%% The owner of Warren's sidecar: starts the Node process as a port, connects
%% to its Unix socket and multiplexes every queue process over that one
%% connection (docs/PROTOCOL.md).
%%
%% - Asynchronous requests (publish, ack, ...) arrive as casts and are written
%%   in the order each queue sent them; `flow' publishes are credited back to
%%   the queue (credit_flow:ack/1) once written.
%% - Synchronous requests get a request id; the reply goes back to the caller.
%% - CONFIRM frames are routed by session handle to the queue's async callback.
%% - If the sidecar dies or the connection drops, every queue process that
%%   holds a session is killed with {sidecar_down, Reason} (so it restarts and
%%   recovers), the sidecar is restarted, and new calls wait until it is back.
%%
%% It is a restartable child of rabbit_sup, started before queue recovery, so
%% it stops after the queues. Queue processes are never linked to anything
%% here and never receive raw messages from us (only exit signals and the
%% credit_flow / run_backing_queue messages they understand).
-module(rabbit_warren_sidecar).
-behaviour(gen_server).

-export([start_link/0, call/3, call/4, cast/4, stats/0, os_pid/0, status/0,
         socket_path/0]).
-export([init/1, handle_call/3, handle_cast/2, handle_info/2, terminate/2,
         code_change/3]).

-define(SERVER, ?MODULE).
-define(OP_SHUTDOWN, 16).
-define(OP_STATS, 17).
-define(OP_TERMINATE, 3).
-define(OP_DELETE_AND_TERMINATE, 4).
-define(REPLY, 100).
-define(CONFIRM, 101).
-define(CONNECT_EVERY_MS, 50).
-define(SHUTDOWN_WAIT_MS, 25000).
-define(HELD_CHECK_MS, 1000).

-record(st, {
    port = undefined,          %% the sidecar port, or undefined while restarting
    os_pid = undefined,
    sock = undefined,          %% gen_tcp socket once connected
    sock_path,
    line = [],                 %% partial stdout line of the port (noeol chunks)
    connect_deadline = 0,      %% monotonic ms: give up connecting and restart
    next_req = 1,
    pending = #{},             %% ReqId => {From, Kind, Op, Body}
    held = queue:new(),        %% {From, Kind, Op, Body, Since} waiting for a connection
    handles = #{},             %% Handle => {QPid, AsyncCb}
    queues = #{},              %% QPid => MRef (queues holding sessions)
    starts = 0,                %% sidecar processes started so far
    failures = 0,              %% restarts since the last successful connection
    announced = false,
    restart_timer = undefined
}).

%%----------------------------------------------------------------------------
%% API (called from queue processes and operators)

start_link() ->
    gen_server:start_link({local, ?SERVER}, ?MODULE, [], []).

%% Synchronous request. Kind: global | {queue, Handle} | {init, AsyncCb}.
%% Returns {ok, ReplyBody} | {error, Reason}.
call(Kind, Op, Body) ->
    call(Kind, Op, Body, timeout(call_timeout, 60000)).

call(Kind, Op, Body, Timeout) ->
    gen_server:call(?SERVER, {req, Kind, Op, Body}, Timeout).

%% Asynchronous request (a whole frame with request id 0), in order per sender.
%% Flow: flow | noflow; with flow the caller has done credit_flow:send(Owner).
cast(Owner, Handle, Flow, Frame) ->
    gen_server:cast(Owner, {async, self(), Handle, Flow, Frame}).

%% The sidecar's STATS as a JSON binary.
stats() ->
    case call(global, ?OP_STATS, <<>>) of
        {ok, Json} -> Json;
        {error, _} = E -> E
    end.

os_pid() ->
    gen_server:call(?SERVER, os_pid).

status() ->
    gen_server:call(?SERVER, status).

socket_path() ->
    Dir = data_dir(),
    P = filename:join([Dir, "warren", "sidecar.sock"]),
    case length(P) > 100 of
        false -> P;
        true ->
            <<H:64, _/binary>> = crypto:hash(sha256, unicode:characters_to_binary(P)),
            lists:flatten(io_lib:format("/tmp/warren-~16.16.0b.sock", [H]))
    end.

%%----------------------------------------------------------------------------

init([]) ->
    process_flag(trap_exit, true),
    Path = socket_path(),
    ok = filelib:ensure_dir(Path),
    St = start_port(#st{sock_path = Path}),
    {ok, St}.

handle_call({req, Kind, Op, Body}, From, St) ->
    {noreply, request(From, Kind, Op, Body, St)};
handle_call(os_pid, _From, St = #st{os_pid = P}) ->
    {reply, P, St};
handle_call(status, _From, St) ->
    {reply, [{os_pid, St#st.os_pid}, {connected, St#st.sock =/= undefined},
             {socket, St#st.sock_path}, {sessions, maps:size(St#st.handles)},
             {queues, maps:size(St#st.queues)}, {pending, maps:size(St#st.pending)},
             {held, queue:len(St#st.held)}, {starts, St#st.starts}], St};
handle_call(_Other, _From, St) ->
    {reply, {error, unknown_call}, St}.

handle_cast({async, QPid, Handle, Flow, Frame}, St = #st{sock = Sock, handles = Hs}) ->
    case {Sock, maps:find(Handle, Hs)} of
        {undefined, _} ->
            %% Its session belonged to a connection that is gone: the queue
            %% was (or is now) killed and will re-init.
            stale(QPid, Flow, sidecar_disconnected),
            {noreply, St};
        {_, {ok, {QPid, _}}} ->
            case gen_tcp:send(Sock, Frame) of
                ok ->
                    Flow =:= flow andalso credit_flow:ack(QPid),
                    {noreply, St};
                {error, Reason} ->
                    Flow =:= flow andalso credit_flow:ack(QPid),
                    {noreply, down({send_failed, Reason}, St)}
            end;
        _ ->
            stale(QPid, Flow, stale_handle),
            {noreply, St}
    end;
handle_cast(_Msg, St) ->
    {noreply, St}.

handle_info({Port, {data, {Eol, Chunk}}}, St = #st{port = Port, line = Acc}) ->
    case Eol of
        noeol -> {noreply, St#st{line = [Chunk | Acc]}};
        eol ->
            Line = iolist_to_binary(lists:reverse([Chunk | Acc])),
            log_line(Line),
            {noreply, St#st{line = []}}
    end;
handle_info({Port, {exit_status, Status}}, St = #st{port = Port}) ->
    rabbit_log:error("Warren: sidecar (pid ~p) exited with status ~p; restarting it",
                     [St#st.os_pid, Status]),
    St1 = down({sidecar_exit, Status}, St#st{port = undefined, os_pid = undefined}),
    {noreply, schedule_restart(St1)};
handle_info({'EXIT', Port, Reason}, St = #st{port = Port}) ->
    rabbit_log:error("Warren: sidecar port closed (~p); restarting it", [Reason]),
    St1 = down({sidecar_port, Reason}, St#st{port = undefined, os_pid = undefined}),
    {noreply, schedule_restart(St1)};
handle_info({'EXIT', _Pid, _Reason}, St) ->
    %% old ports, linked helpers: nothing to do
    {noreply, St};
handle_info(check_held, St) ->
    {noreply, check_held(St)};
handle_info(restart_sidecar, St) ->
    {noreply, start_port(St#st{restart_timer = undefined})};
handle_info(connect, St = #st{sock = undefined, port = Port}) when Port =/= undefined ->
    {noreply, try_connect(St)};
handle_info(connect, St) ->
    {noreply, St};
handle_info({tcp, Sock, Frame}, St = #st{sock = Sock}) ->
    {noreply, frame(Frame, St)};
handle_info({tcp_closed, Sock}, St = #st{sock = Sock}) ->
    rabbit_log:warning("Warren: connection to the sidecar closed"),
    {noreply, reconnect(down(connection_closed, St))};
handle_info({tcp_error, Sock, Reason}, St = #st{sock = Sock}) ->
    rabbit_log:warning("Warren: connection to the sidecar failed: ~p", [Reason]),
    {noreply, reconnect(down({connection_error, Reason}, St))};
handle_info({'DOWN', MRef, process, QPid, _Reason}, St = #st{queues = Qs, handles = Hs}) ->
    case maps:find(QPid, Qs) of
        {ok, MRef} ->
            credit_flow:peer_down(QPid),
            Hs1 = maps:filter(fun(_H, {P, _}) -> P =/= QPid end, Hs),
            {noreply, St#st{queues = maps:remove(QPid, Qs), handles = Hs1}};
        _ ->
            {noreply, St}
    end;
handle_info(_Info, St) ->
    {noreply, St}.

terminate(Reason, St) ->
    kill_queues({warren_stopped, Reason}, St),
    case St#st.sock of
        undefined -> ok;
        Sock ->
            ReqId = St#st.next_req,
            T0 = erlang:monotonic_time(millisecond),
            case gen_tcp:send(Sock, <<?OP_SHUTDOWN, ReqId:32>>) of
                ok ->
                    case await_shutdown(Sock, ReqId, St#st.port, T0 + ?SHUTDOWN_WAIT_MS) of
                        ok ->
                            rabbit_log:info("Warren: sidecar stores closed cleanly in ~b ms",
                                            [erlang:monotonic_time(millisecond) - T0]);
                        {error, E} ->
                            rabbit_log:error("Warren: sidecar did not shut down cleanly: ~p", [E])
                    end;
                {error, E} ->
                    rabbit_log:error("Warren: could not ask the sidecar to shut down: ~p", [E])
            end,
            catch gen_tcp:close(Sock)
    end,
    case St#st.port of
        undefined -> ok;
        Port ->
            %% The sidecar exits 0 after SHUTDOWN; give it a moment, then
            %% close its stdin (it exits on EOF) and make sure it is gone.
            receive {Port, {exit_status, _}} -> ok
            after 3000 ->
                catch port_close(Port),
                kill_os_pid(St#st.os_pid)
            end
    end,
    ok.

code_change(_Old, St, _Extra) ->
    {ok, St}.

%%----------------------------------------------------------------------------
%% requests

request(From, Kind, Op, Body, St = #st{sock = undefined, held = Held}) ->
    queue:is_empty(Held) andalso erlang:send_after(?HELD_CHECK_MS, self(), check_held),
    St#st{held = queue:in({From, Kind, Op, Body, now_ms()}, Held)};
request(From = {QPid, _}, Kind, Op, Body, St) ->
    case Kind of
        {queue, Handle} ->
            case maps:find(Handle, St#st.handles) of
                {ok, {QPid, _}} -> send_req(From, Kind, Op, Body, St);
                _ -> gen_server:reply(From, {error, stale_handle}), St
            end;
        {init, AsyncCb} ->
            St1 = watch(QPid, St),
            send_req(From, {init, QPid, AsyncCb}, Op, Body, St1);
        global ->
            send_req(From, global, Op, Body, St)
    end.

send_req(From, Kind, Op, Body, St = #st{sock = Sock, next_req = ReqId, pending = P}) ->
    Next = case ReqId >= 16#FFFFFFFF of true -> 1; false -> ReqId + 1 end,
    St1 = St#st{next_req = Next, pending = P#{ReqId => {From, Kind, Op, Body}}},
    case gen_tcp:send(Sock, [<<Op:8, ReqId:32>>, Body]) of
        ok -> St1;
        {error, Reason} -> down({send_failed, Reason}, St1)
    end.

watch(QPid, St = #st{queues = Qs}) ->
    case maps:is_key(QPid, Qs) of
        true -> St;
        false -> St#st{queues = Qs#{QPid => erlang:monitor(process, QPid)}}
    end.

frame(<<?REPLY, ReqId:32, Status:8, Body/binary>>, St = #st{pending = P, handles = Hs}) ->
    case maps:take(ReqId, P) of
        error ->
            St;
        {{From, Kind, Op, _}, P1} ->
            St1 = St#st{pending = P1},
            case Status of
                0 ->
                    St2 = case {Kind, Op} of
                              {{init, QPid, AsyncCb}, _} ->
                                  <<Handle:32, _/binary>> = Body,
                                  St1#st{handles = Hs#{Handle => {QPid, AsyncCb}}};
                              {{queue, Handle}, ?OP_TERMINATE} ->
                                  St1#st{handles = maps:remove(Handle, Hs)};
                              {{queue, Handle}, ?OP_DELETE_AND_TERMINATE} ->
                                  St1#st{handles = maps:remove(Handle, Hs)};
                              _ ->
                                  St1
                          end,
                    gen_server:reply(From, {ok, Body}),
                    St2;
                _ ->
                    gen_server:reply(From, {error, Body}),
                    St1
            end
    end;
frame(<<?CONFIRM, Handle:32, N:32, Ids/binary>>, St = #st{handles = Hs}) when byte_size(Ids) =:= N * 16 ->
    case maps:find(Handle, Hs) of
        {ok, {_QPid, AsyncCb}} ->
            MsgIds = [Id || <<Id:16/binary>> <= Ids],
            AsyncCb(rabbit_warren_bq,
                    fun(Mod, BQS) -> rabbit_warren_bq:confirmed(Mod, Handle, MsgIds, BQS) end);
        error ->
            ok
    end,
    St;
frame(Other, St) ->
    rabbit_log:error("Warren: malformed frame from the sidecar (~b bytes); reconnecting",
                     [byte_size(Other)]),
    catch gen_tcp:close(St#st.sock),
    reconnect(down(malformed_frame, St)).

%% The connection is gone: kill every queue holding a session, fail or hold
%% the requests in flight.
down(_Reason, St = #st{sock = undefined, pending = P}) when map_size(P) =:= 0 ->
    St;
down(Reason, St = #st{pending = P, held = Held}) ->
    kill_queues({sidecar_down, Reason}, St),
    catch gen_tcp:close(St#st.sock),
    %% Global requests (START, DELETE_CRASHED, STATS) are retried on the next
    %% connection; queue requests fail (their queue is being killed).
    Sorted = lists:sort(maps:to_list(P)),
    Held1 = lists:foldl(
              fun({_ReqId, {From, global, Op, Body}}, H) ->
                      queue:in({From, global, Op, Body, now_ms()}, H);
                 ({_ReqId, {From, _Kind, _Op, _Body}}, H) ->
                      gen_server:reply(From, {error, {sidecar_down, Reason}}),
                      H
              end, queue:new(), Sorted),
    queue:is_empty(Held1) orelse erlang:send_after(?HELD_CHECK_MS, self(), check_held),
    St#st{sock = undefined, pending = #{}, handles = #{}, queues = #{},
          held = queue:join(Held1, Held)}.

kill_queues(Reason, #st{queues = Qs}) ->
    maps:foreach(fun(QPid, MRef) ->
                         erlang:demonitor(MRef, [flush]),
                         credit_flow:peer_down(QPid),
                         case is_process_alive(QPid) of
                             true ->
                                 rabbit_log:warning("Warren: stopping queue process ~p: ~p",
                                                    [QPid, Reason]),
                                 exit(QPid, Reason);
                             false ->
                                 ok
                         end
                 end, Qs).

stale(QPid, Flow, Why) ->
    Flow =:= flow andalso credit_flow:ack(QPid),
    exit(QPid, {sidecar_down, Why}).

%%----------------------------------------------------------------------------
%% the sidecar process and the connection

start_port(St = #st{sock_path = Path, starts = N}) ->
    Node = env(node_executable, "node"),
    Entry = env(sidecar_entry, undefined),
    Exe = case filename:pathtype(Node) of
              absolute -> Node;
              _ -> os:find_executable(Node)
          end,
    Args = [Entry, "--socket", Path] ++ env(sidecar_args, []),
    try
        true = is_list(Exe) andalso is_list(Entry),
        Port = open_port({spawn_executable, Exe},
                         [{args, Args}, {line, 16384}, use_stdio, stderr_to_stdout,
                          exit_status, binary, hide]),
        {os_pid, OsPid} = erlang:port_info(Port, os_pid),
        rabbit_log:info("Warren: started sidecar ~ts ~ts (pid ~b)",
                        [Exe, Entry, OsPid]),
        self() ! connect,
        St#st{port = Port, os_pid = OsPid, line = [], starts = N + 1,
              connect_deadline = erlang:monotonic_time(millisecond) +
                  timeout(connect_timeout, 60000)}
    catch C:E ->
        rabbit_log:error("Warren: cannot start the sidecar (node ~p, entry ~p): ~p:~p",
                         [Node, Entry, C, E]),
        schedule_restart(St#st{port = undefined, os_pid = undefined, starts = N + 1})
    end.

schedule_restart(St = #st{restart_timer = undefined, failures = N}) ->
    Delay = min(10000, 250 bsl min(N, 6)),
    St#st{failures = N + 1, restart_timer = erlang:send_after(Delay, self(), restart_sidecar)};
schedule_restart(St) ->
    St.

try_connect(St = #st{sock_path = Path}) ->
    Opts = [binary, {packet, 4}, {packet_size, 0}, {active, true}],
    case gen_tcp:connect({local, Path}, 0, Opts, 1000) of
        {ok, Sock} ->
            connected(St#st{sock = Sock});
        {error, _} ->
            case erlang:monotonic_time(millisecond) > St#st.connect_deadline of
                true ->
                    rabbit_log:error("Warren: the sidecar (pid ~p) did not open ~ts in time; "
                                     "killing it", [St#st.os_pid, Path]),
                    kill_os_pid(St#st.os_pid),
                    %% its exit_status follows and restarts it
                    St;
                false ->
                    erlang:send_after(?CONNECT_EVERY_MS, self(), connect),
                    St
            end
    end.

connected(St = #st{held = Held}) ->
    case St#st.announced of
        false ->
            BQ = case application:get_env(rabbitmq_priority_queue, backing_queue_module) of
                     {ok, M} -> M;
                     undefined -> element(2, application:get_env(rabbit, backing_queue_module))
                 end,
            rabbit_log:info("Warren: backing queue ~p active, sidecar pid ~p, data under ~ts "
                            "(socket ~ts)", [BQ, St#st.os_pid, rabbit_vhost_dir_base(),
                                             St#st.sock_path]);
        true ->
            rabbit_log:info("Warren: reconnected to the sidecar (pid ~p)", [St#st.os_pid])
    end,
    St1 = St#st{held = queue:new(), announced = true, failures = 0},
    lists:foldl(fun({From, Kind, Op, Body, _T}, Acc) -> request(From, Kind, Op, Body, Acc) end,
                St1, queue:to_list(Held)).

%% Requests held while the sidecar is down fail after connect_timeout, so a
%% sidecar that cannot start surfaces as an error instead of a hang.
check_held(St = #st{sock = Sock}) when Sock =/= undefined ->
    St;
check_held(St = #st{held = Held}) ->
    Limit = now_ms() - timeout(connect_timeout, 60000),
    {Old, Young} = lists:partition(fun({_, _, _, _, T}) -> T < Limit end, queue:to_list(Held)),
    [gen_server:reply(From, {error, sidecar_unavailable}) || {From, _, _, _, _} <- Old],
    Old =/= [] andalso
        rabbit_log:error("Warren: the sidecar is unavailable; ~b requests failed after waiting "
                         "~b ms", [length(Old), timeout(connect_timeout, 60000)]),
    Young =/= [] andalso erlang:send_after(?HELD_CHECK_MS, self(), check_held),
    St#st{held = queue:from_list(Young)}.

now_ms() ->
    erlang:monotonic_time(millisecond).

reconnect(St = #st{port = undefined}) ->
    St;
reconnect(St) ->
    erlang:send_after(?CONNECT_EVERY_MS, self(), connect),
    St#st{connect_deadline = erlang:monotonic_time(millisecond) + timeout(connect_timeout, 60000)}.

await_shutdown(Sock, ReqId, Port, Deadline) ->
    Left = max(0, Deadline - erlang:monotonic_time(millisecond)),
    receive
        {tcp, Sock, <<?REPLY, ReqId:32, 0, _/binary>>} -> ok;
        {tcp, Sock, <<?REPLY, ReqId:32, _, Err/binary>>} -> {error, Err};
        {tcp, Sock, _Other} -> await_shutdown(Sock, ReqId, Port, Deadline);
        {tcp_closed, Sock} -> {error, connection_closed};
        {tcp_error, Sock, R} -> {error, R};
        {Port, {data, {_, Line}}} -> log_line(Line), await_shutdown(Sock, ReqId, Port, Deadline);
        {Port, {exit_status, S}} -> self() ! {Port, {exit_status, S}}, {error, {exited, S}}
    after Left ->
        {error, timeout}
    end.

kill_os_pid(undefined) -> ok;
kill_os_pid(OsPid) ->
    _ = os:cmd("kill -9 " ++ integer_to_list(OsPid) ++ " 2>/dev/null"),
    ok.

log_line(Line) ->
    case Line of
        <<"[error]", _/binary>> -> rabbit_log:error("warren: ~ts", [Line]);
        <<"[warn]", _/binary>> -> rabbit_log:warning("warren: ~ts", [Line]);
        <<"[debug]", _/binary>> -> rabbit_log:debug("warren: ~ts", [Line]);
        _ -> rabbit_log:info("warren: ~ts", [Line])
    end.

%%----------------------------------------------------------------------------

env(Key, Default) ->
    application:get_env(rabbitmq_warren, Key, Default).

timeout(Key, Default) ->
    env(Key, Default).

data_dir() ->
    rabbit_mnesia:dir().

rabbit_vhost_dir_base() ->
    filename:dirname(rabbit_vhost:msg_store_dir_path(<<"/">>)).
