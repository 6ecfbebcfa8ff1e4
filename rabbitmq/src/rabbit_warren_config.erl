%% rabbitmq_warren's settings, as an operator sets them in advanced.config:
%%   [{rabbitmq_warren, [{durability, write}, {read_ahead, 128}]}].
%% Their names, defaults and checks are plugin.json's table, which the build
%% writes into rabbit_warren_settings.hrl (`warren settings --format erlang`),
%% so this module holds no default of its own. validate/0 runs at boot: an
%% unknown key or a bad value stops the node with an error naming both, before
%% any queue starts. get/1 is a setting's value or its default; sidecar_args/0
%% the flags the sidecar starts with (the sidecar checks them again against
%% the same table).
-module(rabbit_warren_config).

-include("rabbit_warren_settings.hrl").

-export([validate/0, get/1, sidecar_args/0]).

-compile({no_auto_import, [get/1]}).

%% Every problem with the node's rabbitmq_warren settings, as text ([] = sound).
-spec validate() -> [string()].
validate() ->
    [Msg || {K, V} <- application:get_all_env(rabbitmq_warren),
            K =/= included_applications,
            Msg <- [check(K, V)], Msg =/= ok].

-spec get(atom()) -> term().
get(Key) ->
    {Key, _, _, Default} = lists:keyfind(Key, 1, ?WARREN_SETTINGS),
    application:get_env(rabbitmq_warren, Key, Default).

%% The sidecar settings the operator set, as flags (`--file-size-limit N`), in
%% the table's order, then sidecar_args; a flag given twice, the last wins.
-spec sidecar_args() -> [string()].
sidecar_args() ->
    Set = lists:append(
            [[flag(K), arg(V)] || {K, sidecar, _, _} <- ?WARREN_SETTINGS,
                                  {ok, V} <- [application:get_env(rabbitmq_warren, K)]]),
    Set ++ [arg(A) || A <- get(sidecar_args)].

%%----------------------------------------------------------------------------

check(Key, Value) ->
    case lists:keyfind(Key, 1, ?WARREN_SETTINGS) of
        false ->
            fmt("unknown setting rabbitmq_warren.~ts = ~tp (the settings are ~ts; "
                "`warren settings` lists them)", [Key, Value, names()]);
        {_, _, flags, _} ->
            check_flags(Key, Value);
        {_, _, Type, _} ->
            case valid(Type, Value) of
                true -> ok;
                false -> fmt("setting rabbitmq_warren.~ts = ~tp is not valid: it must be ~ts",
                             [Key, Value, expected(Type)])
            end
    end.

valid({integer, Min, Max}, V) ->
    is_integer(V) andalso V >= Min andalso (Max =:= infinity orelse V =< Max);
valid({enum, Values}, V) ->
    case text(V) of
        {ok, S} -> lists:member(S, Values);
        error -> false
    end;
%% a string, not a binary: the sidecar's launcher (open_port, os:find_executable) takes lists
valid(path, V) when is_list(V) ->
    case text(V) of
        {ok, S} -> S =/= "";
        error -> false
    end;
valid(path, _) ->
    false.

%% sidecar_args: a list of flags, each a sidecar setting's, with a valid value.
check_flags(Key, Args) when is_list(Args) ->
    Texts = [text(A) || A <- Args],
    case lists:member(error, Texts) of
        true -> fmt("setting rabbitmq_warren.~ts = ~tp is not valid: it must be a list of "
                    "strings (flags and their values)", [Key, Args]);
        false -> check_pairs(Key, [S || {ok, S} <- Texts])
    end;
check_flags(Key, Args) ->
    fmt("setting rabbitmq_warren.~ts = ~tp is not valid: it must be a list of strings "
        "(flags and their values)", [Key, Args]).

check_pairs(_, []) ->
    ok;
check_pairs(Key, [Flag]) ->
    fmt("setting rabbitmq_warren.~ts: flag ~ts has no value", [Key, Flag]);
check_pairs(Key, [Flag, Value | Rest]) ->
    Known = [{flag(K), K, T} || {K, sidecar, T, _} <- ?WARREN_SETTINGS],
    case lists:keyfind(Flag, 1, Known) of
        false ->
            fmt("setting rabbitmq_warren.~ts: unknown sidecar flag ~ts (the flags are ~ts)",
                [Key, Flag, lists:join(", ", [F || {F, _, _} <- Known])]);
        {_, K, T} ->
            case valid(T, flag_value(T, Value)) of
                true -> check_pairs(Key, Rest);
                false -> fmt("setting rabbitmq_warren.~ts: ~ts ~tp is not valid "
                             "(setting ~ts): it must be ~ts", [Key, Flag, Value, K, expected(T)])
            end
    end.

flag_value({integer, _, _}, S) ->
    case re:run(S, "^-?[0-9]{1,15}$", [{capture, none}]) of
        match -> list_to_integer(S);
        nomatch -> S
    end;
flag_value(_, S) ->
    S.

%% An atom, a binary or a printable string as text; anything else is not.
text(V) when is_atom(V) -> {ok, atom_to_list(V)};
text(V) when is_binary(V) ->
    case unicode:characters_to_list(V) of
        L when is_list(L) -> {ok, L};
        _ -> error
    end;
text(V) when is_list(V) ->
    case io_lib:printable_unicode_list(V) of
        true -> {ok, V};
        false -> error
    end;
text(_) -> error.

expected({integer, Min, infinity}) -> fmt("an integer of at least ~b", [Min]);
expected({integer, Min, Max}) -> fmt("an integer from ~b to ~b", [Min, Max]);
expected({enum, Values}) -> fmt("one of ~ts", [lists:join(", ", Values)]);
expected(path) -> "a file path (a non-empty string, not a binary)".

flag(Key) ->
    "--" ++ [case C of $_ -> $-; _ -> C end || C <- atom_to_list(Key)].

arg(V) when is_integer(V) -> integer_to_list(V);
arg(V) when is_atom(V) -> atom_to_list(V);
arg(V) when is_binary(V) -> unicode:characters_to_list(V);
arg(V) when is_list(V) -> V.

names() ->
    lists:join(", ", [atom_to_list(K) || {K, _, _, _} <- ?WARREN_SETTINGS]).

fmt(Format, Args) ->
    lists:flatten(io_lib:format(Format, Args)).
