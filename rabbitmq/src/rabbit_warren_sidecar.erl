%% The owner of Warren's sidecar: starts the Node process as a port, connects
%% to its Unix socket and multiplexes every queue process over that one
%% connection (docs/PROTOCOL.md; frames built and parsed by rabbit_warren_frames).
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
%% The link is the broker's alone (docs/RELIABILITY.md, "Security"):
%% - the socket lives in a directory only the broker's user can enter (0700):
%%   <data dir>/warren/, or, when that path is too long for a Unix socket, a
%%   directory with a random name made afresh under /tmp and checked to be
%%   ours and empty after its mode is set;
%% - each sidecar start gets a new random token on its stdin (never on its
%%   command line or in its environment); our first frame on a connection is
%%   AUTH with it, and the sidecar refuses any connection that does not;
%% - before sending anything we check (SO_PEERCRED) that the process on the
%%   other end of the socket is the sidecar we started;
%% - frames are limited both ways (max_frame/0), refused before buffering.
%%
%% It is a restartable child of rabbit_sup, started before queue recovery, so
%% it stops after the queues. Queue processes are never linked to anything
%% here and never receive raw messages from us (only exit signals and the
%% credit_flow / run_backing_queue messages they understand).
%%
%% One gen_server, so one module: the port, the socket, the pending calls
%% and the session routes are one state, changed only by its callbacks.
-module(rabbit_warren_sidecar).
-behaviour(gen_server).

-export([start_link/0, call/3, call/4, cast/4, stats/0, os_pid/0, status/0,
         socket_path/0, max_frame/0, await_started/1, set_boot_awaited/1]).
-export([init/1, handle_call/3, handle_cast/2, handle_info/2, terminate/2,
         code_change/3]).

-include_lib("kernel/include/file.hrl").
-include("rabbit_warren_protocol.hrl").

-define(SERVER, ?MODULE).
-define(SOL_SOCKET, 1).
-define(SO_PEERCRED, 17).
-define(MAX_SOCKET_PATH, 100).
-define(CONNECT_EVERY_MS, 50).
-define(HELD_CHECK_MS, 1000).

-record(st, {
    port = undefined,          %% the sidecar port, or undefined while restarting
    os_pid = undefined,
    sock = undefined,          %% gen_tcp socket once connected
    sock_path,
    sock_tmp_dir = undefined,  %% the random /tmp directory holding the socket, if one was needed
    token = undefined,         %% this sidecar start's connection token
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
    restart_timer = undefined,
    boot_waiters = [],         %% callers of await_started/1 before the first connection
    boot_refused = undefined,  %% the first sidecar's refusal, before the boot step waited for it
    last_line = <<>>           %% the sidecar's last output line (names what it refused)
}).

%% The sidecar's exit status when it refuses its configuration (a bad flag, a
%% malformed plugin.json): no restart fixes that.
-define(EXIT_CONFIG, 2).

%%----------------------------------------------------------------------------
%% API (called from queue processes and operators)

start_link() ->
    gen_server:start_link({local, ?SERVER}, ?MODULE, [], []).

%% Synchronous request. Kind: global | {queue, Handle} | {init, AsyncCb}.
%% Returns {ok, ReplyBody} | {error, Reason}.
call(Kind, Op, Body) ->
    call(Kind, Op, Body, rabbit_warren_config:get(call_timeout)).

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

%% Whether this boot's wait for the sidecar is over (set by the boot step's
%% await, cleared when the boot step starts the sidecar): kept outside this
%% process, which may crash and restart in between.
boot_awaited() ->
    persistent_term:get({?MODULE, boot_awaited}, false).

set_boot_awaited(Over) ->
    persistent_term:put({?MODULE, boot_awaited}, Over).

%% Waits for the first sidecar to accept our connection (the boot step does,
%% so a sidecar that cannot start stops the node with its reason):
%% ok | {error, {sidecar_config, Line}} | {error, timeout}.
await_started(Timeout) ->
    try gen_server:call(?SERVER, await_started, Timeout)
    catch exit:{timeout, _} ->
        %% no longer waiting: a later refusal must restart the sidecar as usual
        set_boot_awaited(true),
        gen_server:cast(?SERVER, {boot_wait_over, self()}),
        {error, timeout}
    end.

status() ->
    gen_server:call(?SERVER, status).

socket_path() ->
    proplists:get_value(socket, status()).

%% The largest frame either side accepts: a message of the broker's
%% max_message_size with properties up to frame_max, and room to spare.
max_frame() ->
    MaxMsg = case application:get_env(rabbit, max_message_size) of
                 {ok, M} when is_integer(M), M > 0 -> M;
                 _ -> 134217728
             end,
    FrameMax = case application:get_env(rabbit, frame_max) of
                   {ok, F} when is_integer(F), F > 0 -> F;
                   _ -> 131072
               end,
    max(1048576, min(805306368, MaxMsg + FrameMax + 65536)).

%%----------------------------------------------------------------------------

init([]) ->
    process_flag(trap_exit, true),
    {Path, TmpDir} = private_socket_path(),
    St = start_port(#st{sock_path = Path, sock_tmp_dir = TmpDir}),
    {ok, St}.

%% The socket's path, in a directory that only our user can enter.
private_socket_path() ->
    Dir = filename:join(data_dir(), "warren"),
    P = filename:join(Dir, "sidecar.sock"),
    case length(P) > ?MAX_SOCKET_PATH of
        false ->
            ok = private_dir(Dir, existing_ok),
            {P, undefined};
        true ->
            TmpDir = random_tmp_dir(5),
            rabbit_log:info("Warren: ~ts is too long for a Unix socket; the socket lives in "
                            "the private directory ~ts", [P, TmpDir]),
            {filename:join(TmpDir, "s.sock"), TmpDir}
    end.

random_tmp_dir(0) ->
    error({warren, cannot_make_private_socket_dir});
random_tmp_dir(Tries) ->
    Name = "warren-" ++ binary_to_list(string:lowercase(binary:encode_hex(crypto:strong_rand_bytes(12)))),
    Dir = filename:join("/tmp", Name),
    case private_dir(Dir, must_be_new) of
        ok -> Dir;
        {error, Why} ->
            rabbit_log:warning("Warren: private socket directory ~ts refused (~p); another name",
                               [Dir, Why]),
            random_tmp_dir(Tries - 1)
    end.

%% Makes Dir 0700 and checks it is a real directory owned by the user of the
%% data dir (the broker's). A directory that must be new must be created
%% here, and still be empty once its mode is 0700 (nothing could slip in
%% while the umask's mode applied).
private_dir(Dir, Mode) ->
    Made = case file:make_dir(Dir) of
               ok -> ok;
               {error, eexist} when Mode =:= existing_ok -> ok;
               {error, MkErr} -> {error, {make_dir, MkErr}}
           end,
    {ok, #file_info{uid = Me}} = file:read_file_info(data_dir()),
    case Made of
        ok ->
            case file:read_link_info(Dir) of
                {ok, #file_info{type = directory, uid = Me}} ->
                    ok = file:change_mode(Dir, 8#700),
                    case {Mode, file:list_dir(Dir)} of
                        {must_be_new, {ok, []}} -> ok;
                        {must_be_new, {ok, Other}} -> {error, {not_empty, Other}};
                        {existing_ok, {ok, _}} -> ok;
                        {_, {error, LsErr}} -> {error, {list_dir, LsErr}}
                    end;
                {ok, #file_info{type = directory, uid = Uid}} ->
                    rabbit_log:error("Warren: ~ts belongs to uid ~b, not to the broker's user "
                                     "(uid ~b); refusing to put the sidecar's socket there",
                                     [Dir, Uid, Me]),
                    {error, {owner, Uid}};
                {ok, #file_info{type = T}} ->
                    {error, {not_a_directory, T}};
                {error, StatErr} ->
                    {error, {stat, StatErr}}
            end;
        Err ->
            Err
    end.

handle_call({req, Kind, Op, Body}, From, St) ->
    {noreply, request(From, Kind, Op, Body, St)};
handle_call(os_pid, _From, St = #st{os_pid = P}) ->
    {reply, P, St};
handle_call(await_started, _From, St = #st{announced = true}) ->
    {reply, ok, St};
handle_call(await_started, _From, St = #st{boot_refused = Line}) when Line =/= undefined ->
    {reply, {error, {sidecar_config, Line}}, St};
handle_call(await_started, From, St = #st{boot_waiters = W}) ->
    {noreply, St#st{boot_waiters = [From | W]}};
handle_call(status, _From, St) ->
    {reply, [{os_pid, St#st.os_pid}, {connected, St#st.sock =/= undefined},
             {socket, St#st.sock_path}, {sessions, maps:size(St#st.handles)},
             {queues, maps:size(St#st.queues)}, {pending, maps:size(St#st.pending)},
             {held, queue:len(St#st.held)}, {starts, St#st.starts}], St};
handle_call(_Other, _From, St) ->
    {reply, {error, unknown_call}, St}.

handle_cast({boot_wait_over, Pid}, St = #st{boot_waiters = W}) ->
    {noreply, St#st{boot_waiters = [From || From = {P, _} <- W, P =/= Pid]}};
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
            St1 = St#st{line = [], last_line = Line},
            %% The sidecar says "listening" once its socket is open: connect
            %% now rather than at the next poll (the poll keeps running).
            {noreply, case St1#st.sock of
                          undefined -> try_connect(St1, no_retry);
                          _ -> St1
                      end}
    end;
handle_info({Port, {exit_status, ?EXIT_CONFIG}}, St = #st{port = Port, announced = false,
                                                       boot_waiters = [_ | _] = W}) ->
    %% At boot, a sidecar that refuses its configuration stops the node: the
    %% boot step gets the reason (the sidecar's last line) instead of queues
    %% that wait for a sidecar that will never start.
    rabbit_log:error("Warren: the sidecar (pid ~p) refused its configuration: ~ts",
                     [St#st.os_pid, St#st.last_line]),
    [gen_server:reply(From, {error, {sidecar_config, St#st.last_line}}) || From <- W],
    {noreply, St#st{port = undefined, os_pid = undefined, boot_waiters = []}};
handle_info({Port, {exit_status, ?EXIT_CONFIG}}, St = #st{port = Port, announced = false}) ->
    case boot_awaited() of
        false ->
            %% Started early in the boot, refused before the boot step waits
            %% for it: kept for that wait, which stops the node with it (no
            %% restart fixes it).
            rabbit_log:error("Warren: the sidecar (pid ~p) refused its configuration: ~ts",
                             [St#st.os_pid, St#st.last_line]),
            {noreply, St#st{port = undefined, os_pid = undefined, boot_refused = St#st.last_line}};
        true ->
            %% The wait is over (this process restarted after it): as any exit.
            {noreply, sidecar_exited(?EXIT_CONFIG, St)}
    end;
handle_info({Port, {exit_status, Status}}, St = #st{port = Port}) ->
    {noreply, sidecar_exited(Status, St)};
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
    {noreply, try_connect(St, retry)};
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
            case gen_tcp:send(Sock, rabbit_warren_frames:shutdown_frame(ReqId)) of
                ok ->
                    case await_shutdown(Sock, ReqId, St#st.port, T0 + shutdown_wait()) of
                        ok ->
                            rabbit_log:info("Warren: sidecar stores closed cleanly in ~b ms",
                                            [erlang:monotonic_time(millisecond) - T0]);
                        {error, E} ->
                            rabbit_log:error("Warren: sidecar did not shut down cleanly: ~p", [E])
                    end;
                {error, E} ->
                    rabbit_log:error("Warren: could not ask the sidecar to shut down: ~p", [E])
            end,
            close_quietly(Sock)
    end,
    case St#st.port of
        undefined -> ok;
        Port ->
            %% The sidecar exits 0 after SHUTDOWN; give it a moment, then
            %% close its stdin (it exits on EOF) and make sure it is gone.
            receive {Port, {exit_status, _}} -> ok
            after 3000 ->
                try port_close(Port) catch error:badarg -> ok end,
                kill_os_pid(St#st.os_pid)
            end
    end,
    case St#st.sock_tmp_dir of
        undefined -> ok;
        TmpDir -> _ = file:del_dir_r(TmpDir), ok
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
    case gen_tcp:send(Sock, rabbit_warren_frames:request_frame(Op, ReqId, Body)) of
        ok -> St1;
        {error, Reason} -> down({send_failed, Reason}, St1)
    end.

watch(QPid, St = #st{queues = Qs}) ->
    case maps:is_key(QPid, Qs) of
        true -> St;
        false -> St#st{queues = Qs#{QPid => erlang:monitor(process, QPid)}}
    end.

frame(Frame, St) ->
    case rabbit_warren_frames:decode_push(Frame) of
        {reply, ReqId, Status, Body} -> reply(ReqId, Status, Body, St);
        {confirm, Handle, MsgIds} -> confirm(Handle, MsgIds, St);
        {failed, Handle, Msg} -> failed(Handle, Msg, St);
        malformed -> malformed(Frame, St)
    end.

%% The reply to a synchronous request goes back to its caller; INIT,
%% TERMINATE and DELETE_AND_TERMINATE open and close sessions.
reply(ReqId, Status, Body, St = #st{pending = P, handles = Hs}) ->
    case maps:take(ReqId, P) of
        error ->
            St;
        {{From, Kind, Op, _}, P1} ->
            St1 = St#st{pending = P1},
            case Status of
                0 ->
                    St2 = case {Kind, Op} of
                              {{init, QPid, AsyncCb}, _} ->
                                  Handle = rabbit_warren_frames:init_reply_handle(Body),
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
    end.

%% Confirms go to the queue's async callback, which hands them to rabbit_warren_bq.
confirm(Handle, MsgIds, St = #st{handles = Hs}) ->
    case maps:find(Handle, Hs) of
        {ok, {_QPid, AsyncCb}} ->
            AsyncCb(rabbit_warren_bq,
                    fun(Mod, BQS) -> rabbit_warren_bq:confirmed(Mod, Handle, MsgIds, BQS) end);
        error ->
            ok
    end,
    St.

failed(Handle, Msg, St = #st{handles = Hs}) ->
    %% The queue's journal or store failed for good: end its process, so that
    %% RabbitMQ nacks what it has not confirmed and restarts it (non-clean).
    case maps:find(Handle, Hs) of
        {ok, {QPid, _}} ->
            rabbit_log:error("Warren: ~ts; stopping queue process ~p (its publishers get nacks "
                             "for what was not confirmed, and RabbitMQ restarts it)", [Msg, QPid]),
            exit(QPid, {warren_queue_failed, Msg}),
            St#st{handles = maps:remove(Handle, Hs)};
        error ->
            St
    end.

malformed(Other, St) ->
    rabbit_log:error("Warren: malformed frame from the sidecar (~b bytes); reconnecting",
                     [byte_size(Other)]),
    close_quietly(St#st.sock),
    reconnect(down(malformed_frame, St)).

%% The connection is gone: kill every queue holding a session, fail or hold
%% the requests in flight.
down(_Reason, St = #st{sock = undefined, pending = P}) when map_size(P) =:= 0 ->
    St;
down(Reason, St = #st{pending = P, held = Held}) ->
    kill_queues({sidecar_down, Reason}, St),
    close_quietly(St#st.sock),
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

%% The sidecar exited on its own: its session's queues are told, and it restarts.
sidecar_exited(Status, St) ->
    Status =:= ?EXIT_CONFIG andalso
        rabbit_log:error("Warren: the sidecar (pid ~p) refused its configuration: ~ts",
                         [St#st.os_pid, St#st.last_line]),
    rabbit_log:error("Warren: sidecar (pid ~p) exited with status ~p; restarting it",
                     [St#st.os_pid, Status]),
    St1 = down({sidecar_exit, Status}, St#st{port = undefined, os_pid = undefined}),
    schedule_restart(St1).


%% Node's own flags, before the sidecar's script.
node_flags() ->
    case rabbit_warren_config:get(sidecar_old_space_mb) of
        0 -> [];
        Mb -> ["--initial-old-space-size=" ++ integer_to_list(Mb)]
    end.

start_port(St = #st{sock_path = Path, starts = N}) ->
    Node = rabbit_warren_config:get(node_executable),
    Entry = rabbit_warren_config:get(sidecar_entry),
    Exe = case filename:pathtype(Node) of
              absolute -> Node;
              _ -> os:find_executable(Node)
          end,
    Settings = rabbit_warren_config:sidecar_args(),
    NodeFlags = node_flags(),
    Args = NodeFlags ++
        [Entry, "--socket", Path, "--data-dir", data_dir(),
         "--max-frame", integer_to_list(max_frame())] ++ Settings,
    Token = crypto:strong_rand_bytes(?TOKEN_BYTES),
    try
        true = is_list(Exe) andalso is_list(Entry),
        Port = open_port({spawn_executable, Exe},
                         [{args, Args}, {line, 16384}, use_stdio, stderr_to_stdout,
                          exit_status, binary, hide]),
        {os_pid, OsPid} = erlang:port_info(Port, os_pid),
        %% The token goes down the sidecar's stdin, a pipe only it reads.
        true = port_command(Port, [string:lowercase(binary:encode_hex(Token)), $\n]),
        rabbit_log:info("Warren: started sidecar ~ts ~ts (pid ~b); durable classic queues keep "
                        "their messages under ~ts/<vhost>/warren; settings given: ~ts",
                        [Exe, lists:join(" ", NodeFlags ++ [Entry]), OsPid, rabbit_vhost_dir_base(),
                         case Settings of
                             [] -> "none (plugin.json's defaults)";
                             _ -> lists:join(" ", Settings)
                         end]),
        self() ! connect,
        St#st{port = Port, os_pid = OsPid, line = [], starts = N + 1, token = Token,
              connect_deadline = erlang:monotonic_time(millisecond) +
                  rabbit_warren_config:get(connect_timeout)}
    catch C:E ->
        rabbit_log:error("Warren: cannot start the sidecar (node ~p, entry ~p): ~p:~p",
                         [Node, Entry, C, E]),
        schedule_restart(St#st{port = undefined, os_pid = undefined, starts = N + 1})
    end.

%% The first restart after a working sidecar died is immediate (every queue
%% of the node waits for it); a sidecar that keeps failing is retried after
%% 250 ms, doubling up to 10 s.
schedule_restart(St = #st{restart_timer = undefined, failures = N}) ->
    Delay = case N of
                0 -> 0;
                _ -> min(10000, 250 bsl min(N - 1, 6))
            end,
    St#st{failures = N + 1, restart_timer = erlang:send_after(Delay, self(), restart_sidecar)};
schedule_restart(St) ->
    St.

%% Retry: retry | no_retry (another attempt is scheduled already).
try_connect(St = #st{sock_path = Path, os_pid = OsPid, token = Token}, Retry) ->
    Opts = [binary, {packet, 4}, {packet_size, max_frame()}, {active, false}],
    case gen_tcp:connect({local, Path}, 0, Opts, 1000) of
        {ok, Sock} ->
            case peer_pid(Sock) of
                {ok, OsPid} ->
                    ok = gen_tcp:send(Sock, rabbit_warren_frames:auth_frame(Token)),
                    ok = inet:setopts(Sock, [{active, true}]),
                    connected(St#st{sock = Sock});
                Other ->
                    rabbit_log:error("Warren: the process on ~ts is not the sidecar we started "
                                     "(pid ~p): ~p; not talking to it", [Path, OsPid, Other]),
                    gen_tcp:close(Sock),
                    retry_connect(St, Retry)
            end;
        {error, _} ->
            retry_connect(St, Retry)
    end.

%% The pid that listens on the other end of a Unix socket (SO_PEERCRED).
peer_pid(Sock) ->
    case inet:getopts(Sock, [{raw, ?SOL_SOCKET, ?SO_PEERCRED, 12}]) of
        {ok, [{raw, _, _, <<Pid:32/native, _Uid:32/native, _Gid:32/native>>}]} -> {ok, Pid};
        Other -> {no_peer_credentials, Other}
    end.

retry_connect(St, no_retry) ->
    St;
retry_connect(St = #st{sock_path = Path}, retry) ->
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
    [gen_server:reply(From, ok) || From <- St#st.boot_waiters],
    St1 = St#st{held = queue:new(), announced = true, failures = 0, boot_waiters = []},
    lists:foldl(fun({From, Kind, Op, Body, _T}, Acc) -> request(From, Kind, Op, Body, Acc) end,
                St1, queue:to_list(Held)).

%% Requests held while the sidecar is down fail after connect_timeout, so a
%% sidecar that cannot start surfaces as an error instead of a hang.
check_held(St = #st{sock = Sock}) when Sock =/= undefined ->
    St;
check_held(St = #st{held = Held}) ->
    Limit = now_ms() - rabbit_warren_config:get(connect_timeout),
    {Old, Young} = lists:partition(fun({_, _, _, _, T}) -> T < Limit end, queue:to_list(Held)),
    [gen_server:reply(From, {error, sidecar_unavailable}) || {From, _, _, _, _} <- Old],
    Old =/= [] andalso
        rabbit_log:error("Warren: the sidecar is unavailable; ~b requests failed after waiting "
                         "~b ms", [length(Old), rabbit_warren_config:get(connect_timeout)]),
    Young =/= [] andalso erlang:send_after(?HELD_CHECK_MS, self(), check_held),
    St#st{held = queue:from_list(Young)}.

now_ms() ->
    erlang:monotonic_time(millisecond).

reconnect(St = #st{port = undefined}) ->
    St;
reconnect(St) ->
    erlang:send_after(?CONNECT_EVERY_MS, self(), connect),
    St#st{connect_deadline = erlang:monotonic_time(millisecond) + rabbit_warren_config:get(connect_timeout)}.

await_shutdown(Sock, ReqId, Port, Deadline) ->
    Left = max(0, Deadline - erlang:monotonic_time(millisecond)),
    receive
        {tcp, Sock, Frame} ->
            case rabbit_warren_frames:decode_push(Frame) of
                {reply, ReqId, 0, _} -> ok;
                {reply, ReqId, _, Err} -> {error, Err};
                _ -> await_shutdown(Sock, ReqId, Port, Deadline)
            end;
        {tcp_closed, Sock} -> {error, connection_closed};
        {tcp_error, Sock, R} -> {error, R};
        {Port, {data, {_, Line}}} -> log_line(Line), await_shutdown(Sock, ReqId, Port, Deadline);
        {Port, {exit_status, S}} -> self() ! {Port, {exit_status, S}}, {error, {exited, S}}
    after Left ->
        {error, timeout}
    end.

%% How long terminate waits for the sidecar to close its stores cleanly: our
%% supervisor allows a worker rabbit's worker_shutdown_timeout (300 s by
%% default) before it kills it; keep 10 s of it for the rest of terminate.
shutdown_wait() ->
    Worker = case application:get_env(rabbit, worker_shutdown_timeout) of
                 {ok, W} when is_integer(W) -> W;
                 _ -> 300000
             end,
    max(5000, Worker - 10000).

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

%% The broker's data dir: vhost directories are <this>/msg_stores/vhosts/<hash>.
data_dir() ->
    case erlang:function_exported(rabbit, data_dir, 0) of
        true -> rabbit:data_dir();
        false -> rabbit_mnesia:dir()
    end.

rabbit_vhost_dir_base() ->
    filename:dirname(rabbit_vhost:msg_store_dir_path(<<"/">>)).

%% A socket that may be closed already, or never opened.
close_quietly(undefined) -> ok;
close_quietly(Sock) -> _ = gen_tcp:close(Sock), ok.
