# colmena's per-node options (zhaofengli/colmena, src/nix/hive/options.nix, `deploymentOptions`
# and `keyType`), declared with the types colmena gives them, so a hive node that sets a
# `deployment.*` option colmena does not have, or sets one with the wrong type, fails here as
# it would under colmena. `name` is the node's name (colmena passes it as a special argument).
{ lib, name, ... }:

let
  inherit (lib) mkOption types;
  option = type: default: mkOption { inherit type default; };
  keyType =
    { name, config, ... }:
    {
      options = {
        name = option types.str name;
        text = option (types.nullOr types.str) null;
        keyFile = mkOption {
          type = types.nullOr types.path;
          default = null;
          apply = value: if value == null then null else toString value;
        };
        keyCommand = option (types.nullOr (
          types.addCheck (types.listOf types.str) (l: builtins.length l > 0)
        )) null;
        destDir = option types.path "/run/keys";
        path = mkOption {
          type = types.path;
          default = "${config.destDir}/${config.name}";
          internal = true;
        };
        user = option types.str "root";
        group = option types.str "root";
        permissions = option types.str "0600";
        uploadAt = option (types.enum [
          "pre-activation"
          "post-activation"
        ]) "pre-activation";
      };
    };
in
{
  options.deployment = {
    targetHost = option (types.nullOr types.str) name;
    targetPort = option (types.nullOr types.ints.unsigned) null;
    targetUser = option (types.nullOr types.str) "root";
    allowLocalDeployment = option types.bool false;
    buildOnTarget = option types.bool false;
    tags = option (types.listOf types.str) [ ];
    keys = option (types.attrsOf (types.submodule keyType)) { };
    replaceUnknownProfiles = option types.bool true;
    privilegeEscalationCommand = option (types.listOf types.str) [
      "sudo"
      "-H"
      "--"
    ];
  };
}
