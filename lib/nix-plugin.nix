# The evaluator plugin (nix-plugin/): builtins.microvmValidate and builtins.microvmRender, for a
# Nix >= 2.24 built with its C API. Nix loads it through `plugin-files`; the host option
# microvm.host.evaluatorPlugin.enable sets that. Nothing requires it: without it, runners are
# built by the generator as before.
{
  lib,
  rustPlatform,
  pkg-config,
  # The Nix whose C API (libnixexprc, nix-expr-c.pc) the plugin links against; load the plugin
  # into this Nix (or one of the same version).
  nix,
}:

rustPlatform.buildRustPackage {
  pname = "microvm-nix-plugin";
  version = (lib.importTOML ../nix-plugin/Cargo.toml).package.version;

  src = import ./workspace-source.nix { inherit lib; };

  cargoLock.lockFile = ../Cargo.lock;
  cargoBuildFlags = [
    "-p"
    "microvm-nix-plugin"
  ];
  cargoTestFlags = [
    "-p"
    "microvm-nix-plugin"
    "--lib"
  ];

  nativeBuildInputs = [ pkg-config ];
  buildInputs = [ (lib.getDev nix) ];

  # cargo installs no libraries; the plugin is one.
  postInstall = ''
    mkdir -p "$out/lib"
    cp target/*/release/libmicrovm_nix_plugin.so "$out/lib/" 2>/dev/null \
      || cp target/release/libmicrovm_nix_plugin.so "$out/lib/"
  '';

  passthru.pluginFile = "lib/libmicrovm_nix_plugin.so";

  meta = {
    description = "Nix evaluator plugin: microvm-codegen's validation and runner rendering as builtins";
    license = lib.licenses.mit;
    platforms = lib.platforms.linux;
  };
}
