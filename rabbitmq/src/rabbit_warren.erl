%% Boot steps of the rabbitmq_warren plugin.
%%
%% Warren is selected as the backing queue with advanced.config
%%   [{rabbit, [{backing_queue_module, rabbit_warren_bq}]}].
%% RabbitMQ's priority-queue boot step then moves that module under its
%% wrapper, so x-max-priority keeps working.
%%
%% Two steps. The first, right after pre_boot, checks the settings and starts
%% the sidecar owner (rabbit_warren_sidecar) as a restartable child of
%% rabbit_sup: the sidecar (a Node process) starts while the broker runs its
%% own boot steps instead of after them. The second, before queue recovery,
%% waits for it: START/INIT of the recovered queues go through it, and it
%% stops after the queues.
-module(rabbit_warren).

-export([boot/0, await/0, backing_queue_module/0]).

-rabbit_boot_step({rabbit_warren_sidecar,
                   [{description, "Warren: settings checked, sidecar started"},
                    {mfa,         {?MODULE, boot, []}},
                    {requires,    pre_boot},
                    {enables,     external_infrastructure}]}).

-rabbit_boot_step({rabbit_warren,
                   [{description, "Warren: sidecar up for the rabbit_warren_bq backing queue"},
                    {mfa,         {?MODULE, await, []}},
                    {requires,    [core_initialized, rabbit_warren_sidecar]},
                    {enables,     recovery}]}).

boot() ->
    case try rabbit_boot_state:get() catch _:_ -> undefined end of
        ready ->
            %% Enabled on a running node: the queues already run on another
            %% backing queue, and switching under them would lose messages.
            rabbit_log:error("Warren: rabbitmq_warren cannot be enabled on a running node; "
                             "enable it offline (rabbitmq-plugins enable --offline "
                             "rabbitmq_warren), set backing_queue_module in advanced.config "
                             "and restart the node"),
            {error, {rabbitmq_warren, must_be_enabled_at_boot}};
        _ ->
            case rabbit_warren_config:validate() of
                [] -> start();
                Problems ->
                    %% A setting Warren cannot honour stops the node: never a fall-back.
                    [rabbit_log:error("Warren: ~ts", [P]) || P <- Problems],
                    {error, {rabbitmq_warren, invalid_settings, Problems}}
            end
    end.

start() ->
    BQ = backing_queue_module(),
    case BQ of
        rabbit_warren_bq -> ok;
        _ -> rabbit_log:warning(
               "Warren: the plugin is enabled but the backing queue is ~p; set "
               "{rabbit, [{backing_queue_module, rabbit_warren_bq}]} in "
               "advanced.config for Warren to store the queues' messages", [BQ])
    end,
    rabbit_warren_sidecar:set_boot_awaited(false),
    rabbit_sup:start_restartable_child(rabbit_warren_sidecar).

%% Queue recovery (the next boot steps) waits for the sidecar anyway; waiting
%% here lets a sidecar that refuses its configuration stop the node, with its
%% reason, instead of leaving queues that never start. A slow start is only
%% logged: the queues keep waiting for it as they always do.
await() ->
    Started = rabbit_warren_sidecar:await_started(rabbit_warren_config:get(connect_timeout)),
    rabbit_warren_sidecar:set_boot_awaited(true),
    case Started of
        ok ->
            ok;
        {error, {sidecar_config, Why}} ->
            {error, {rabbitmq_warren, sidecar_refused_its_configuration, Why}};
        {error, timeout} ->
            rabbit_log:warning("Warren: the sidecar has not started yet; queues wait for it"),
            ok
    end.

%% The module classic queues really use (under the priority-queue wrapper).
backing_queue_module() ->
    case application:get_env(rabbit, backing_queue_module) of
        {ok, rabbit_priority_queue} ->
            case application:get_env(rabbitmq_priority_queue, backing_queue_module) of
                {ok, M} -> M;
                undefined -> rabbit_variable_queue
            end;
        {ok, M} -> M;
        undefined -> rabbit_variable_queue
    end.
