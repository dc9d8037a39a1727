# The runner package of one VM: its spec written with builtins.toJSON, and
# `microvm-codegen generate` run on it in a plain derivation (no import-from-derivation: nothing
# is read back into evaluation). The generator validates the spec again and refuses to build a
# runner it cannot make work.
{ lib, runnerSpec }:

{
  pkgs,
  microvmConfig,
  toplevel ? null,
  host ? null,
  # The generator, for the machine that builds the runner.
  codegen ? microvmConfig.codegen.package,
}:

let
  cfg = microvmConfig;
  vmPkgs = cfg.vmHostPackages;
  spec = runnerSpec {
    inherit
      pkgs
      microvmConfig
      toplevel
      host
      ;
  };
  name = "microvm-${cfg.hypervisor}-${cfg.hostName}";
  specFile = vmPkgs.writeText "${name}.json" (builtins.toJSON spec);
in
vmPkgs.runCommand name
  {
    nativeBuildInputs = [ codegen ];
    passthru = {
      inherit (cfg) hypervisor machineId registerWithMachined;
      inherit spec specFile;
    };
    meta.mainProgram = "microvm-run";
  }
  ''
    microvm-codegen generate --spec ${specFile} --out "$out"
  ''
