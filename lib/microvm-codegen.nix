# The generator, built from this repository with nixpkgs' Rust tooling and our Cargo.lock.
# Used by the flake's packages and overlay and, through them, by every runner.
{ lib, rustPlatform }:

rustPlatform.buildRustPackage {
  pname = "microvm-codegen";
  version = (lib.importTOML ../codegen/Cargo.toml).package.version;

  # Only what the workspace compiles from (lib/workspace-source.nix).
  src = import ./workspace-source.nix { inherit lib; };

  cargoLock.lockFile = ../Cargo.lock;

  cargoBuildFlags = [
    "-p"
    "microvm-codegen"
  ];
  # The crate's integration tests boot guests with qemu and need a boot environment; run the
  # library's unit tests only.
  cargoTestFlags = [
    "-p"
    "microvm-codegen"
    "--lib"
  ];

  meta = {
    description = "Turns a microVM runner spec into runner scripts, systemd units and host network setup";
    license = lib.licenses.mit;
    mainProgram = "microvm-codegen";
  };
}
