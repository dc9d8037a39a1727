# The runner package of one VM: its spec written with builtins.toJSON, and
# `microvm-codegen generate` run on it in a plain derivation (no import-from-derivation: nothing
# is read back into evaluation). The generator validates the spec again and refuses to build a
# runner it cannot make work.
#
# Where Nix has loaded our evaluator plugin (`builtins ? microvmRender`, lib/nix-plugin.nix),
# the generator runs inside the evaluator instead: the spec is validated at evaluation time and
# the derivation only writes the rendered files, with no generator among its inputs.
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
  passthru = {
    inherit (cfg) hypervisor machineId registerWithMachined;
    inherit spec specFile;
  };
  meta.mainProgram = "microvm-run";

  # The generator's tree from the plugin: { "<path>" = { type = "file"; text; executable; } or
  # { type = "symlink"; target; }; }.
  rendered = builtins.microvmRender spec;
  paths = builtins.attrNames rendered;
  numbered = lib.imap0 (index: path: {
    inherit index path;
    entry = rendered.${path};
  }) paths;
  files = builtins.filter (file: file.entry.type == "file") numbered;
  fileAttr = file: "microvmFile${toString file.index}";
  # One line per entry, tab-separated: file <attr> <mode> <path>, or symlink <target> - <path>.
  # The generator's paths and link targets hold no tabs or newlines.
  manifest = lib.concatMapStrings (
    file:
    if file.entry.type == "file" then
      "file\t${fileAttr file}\t${if file.entry.executable then "0755" else "0644"}\t${file.path}\n"
    else
      "symlink\t${file.entry.target}\t-\t${file.path}\n"
  ) numbered;
in
if builtins ? microvmRender then
  vmPkgs.runCommand name
    (
      builtins.listToAttrs (map (file: lib.nameValuePair (fileAttr file) file.entry.text) files)
      // {
        # The rendered text carries no string context; the spec does, so the store paths it
        # names (and the runner's scripts call) are inputs of this derivation.
        specJson = builtins.toJSON spec;
        microvmManifest = manifest;
        passAsFile = [
          "specJson"
          "microvmManifest"
        ]
        ++ map fileAttr files;
        passthru = passthru // {
          files = rendered;
        };
        inherit meta;
      }
    )
    ''
      # One process per file (its cp): directories and modes are made for all files at once.
      # Every path the generator writes is below a directory (bin/, share/, lib/).
      dirs=() files=() executables=() links=()
      while IFS=$'\t' read -r kind from mode path; do
        dirs+=("$out/''${path%/*}")
        case $kind in
          file)
            var="''${from}Path"
            files+=("''${!var}" "$out/$path")
            if [[ $mode == 0755 ]]; then executables+=("$out/$path"); fi
            ;;
          symlink) links+=("$from" "$out/$path") ;;
        esac
      done < "$microvmManifestPath"
      mkdir -p "''${dirs[@]}"
      for ((i = 0; i < ''${#files[@]}; i += 2)); do
        cp "''${files[i]}" "''${files[i + 1]}"
      done
      for ((i = 0; i < ''${#links[@]}; i += 2)); do
        ln -s "''${links[i]}" "''${links[i + 1]}"
      done
      find "$out" -type f -exec chmod 0644 {} +
      if ((''${#executables[@]})); then chmod 0755 "''${executables[@]}"; fi
    ''
else
  vmPkgs.runCommand name
    {
      nativeBuildInputs = [ codegen ];
      inherit passthru meta;
    }
    ''
      microvm-codegen generate --spec ${specFile} --out "$out"
    ''
