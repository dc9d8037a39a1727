# The generator, built from this repository with nixpkgs' Rust tooling and our Cargo.lock.
# Used by the flake's packages and overlay and, through them, by every runner.
{ lib, rustPlatform }:

let
  root = ../.;
in
rustPlatform.buildRustPackage {
  pname = "microvm-codegen";
  version = (lib.importTOML ../codegen/Cargo.toml).package.version;

  # Only what the crate compiles from: the workspace, the crate, its embedded templates, the
  # capability table and the options reference (`lint` checks against it) it includes.
  src = lib.fileset.toSource {
    inherit root;
    fileset = lib.fileset.unions [
      ../Cargo.toml
      ../Cargo.lock
      ../codegen
      ../templates
      ./capabilities.json
      ../doc/options.json
    ];
  };

  cargoLock.lockFile = ../Cargo.lock;

  # The crate's integration tests boot guests with qemu and need a boot environment; run the
  # library's unit tests only.
  cargoTestFlags = [ "--lib" ];

  meta = {
    description = "Turns a microVM runner spec into runner scripts, systemd units and host network setup";
    license = lib.licenses.mit;
    mainProgram = "microvm-codegen";
  };
}
