# The Cargo workspace's sources, for the generator's and the plugin's packages: the workspace,
# its crates, the templates the generator embeds, the capability table and the options
# reference (`lint` checks against it) it includes.
{ lib }:

lib.fileset.toSource {
  root = ../.;
  fileset = lib.fileset.unions [
    ../Cargo.toml
    ../Cargo.lock
    ../codegen
    ../nix-plugin
    ../templates
    ./capabilities.json
    ../doc/options.json
  ];
}
