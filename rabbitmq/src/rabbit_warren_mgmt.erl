%% Warren in the management UI, on every broker version: a queue's page gets a
%% "Warren" panel with Warren's own figures for it. RabbitMQ 4.x's management
%% agent keeps only `version' of a queue's backing_queue_status in the queue
%% record (3.10 shows it whole), so the panel asks for it here:
%%   GET /api/warren/queues/:vhost/:queue -> the queue's backing_queue_status
%%   as Warren reports it (rabbit_warren_bq:info/2), or {} for a queue Warren
%%   does not back (quorum queues, streams);
%% and priv/www/js/warren.js renders it through the UI's queue-page extension
%% point (QUEUE_EXTRA_CONTENT). The management plugin finds this module by its
%% behaviour when it runs; without it, nothing here is loaded or called.
-module(rabbit_warren_mgmt).

-behaviour(rabbit_mgmt_extension).

-export([dispatcher/0, web_ui/0]).
-export([init/2, content_types_provided/2, resource_exists/2, is_authorized/2,
         to_json/2]).

-include_lib("rabbitmq_management_agent/include/rabbit_mgmt_records.hrl").

-define(INFO_TIMEOUT, 5000).

dispatcher() ->
    [{"/warren/queues/:vhost/:queue", ?MODULE, []}].

web_ui() ->
    [{javascript, <<"warren.js">>}].

init(Req, _Opts) ->
    {cowboy_rest, Req, #context{}}.

content_types_provided(ReqData, Context) ->
    {[{<<"application/json">>, to_json}], ReqData, Context}.

resource_exists(ReqData, Context) ->
    {lookup(ReqData) =/= not_found, ReqData, Context}.

%% The same rights as reading the queue's own record: access to its vhost.
is_authorized(ReqData, Context) ->
    rabbit_mgmt_util:is_authorized_vhost(ReqData, Context).

to_json(ReqData, Context) ->
    rabbit_mgmt_util:reply(warren_status(lookup(ReqData)), ReqData, Context).

%%----------------------------------------------------------------------------

lookup(ReqData) ->
    case rabbit_mgmt_util:vhost(ReqData) of
        not_found -> not_found;
        none -> not_found;
        VHost ->
            case rabbit_amqqueue:lookup(
                   rabbit_misc:r(VHost, queue, rabbit_mgmt_util:id(queue, ReqData))) of
                {ok, Q} -> Q;
                {error, not_found} -> not_found
            end
    end.

%% Warren's keys of the queue, asked of its process (a classic queue's; at most
%% 5 s: one busy with a long purge or delete must not hold the UI's request);
%% #{} when Warren does not back it or it does not answer in time.
warren_status(Q) ->
    try status_of(amqqueue:get_type(Q), amqqueue:get_pid(Q)) of
        {ok, [{backing_queue_status, Status}]} when is_list(Status) ->
            case proplists:get_value(backing_queue, Status) of
                warren -> maps:from_list(Status);
                _ -> #{}
            end;
        _ ->
            #{}
    catch _:_ ->
        #{}
    end.

status_of(rabbit_classic_queue, Pid) when is_pid(Pid) ->
    gen_server2:call(Pid, {info, [backing_queue_status]}, ?INFO_TIMEOUT);
status_of(_, _) ->
    not_classic.
