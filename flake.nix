{
  description = "Declarative NixOS microVMs whose runners a Rust generator writes";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";

  outputs =
    { self, nixpkgs }:
    let
      inherit (nixpkgs) lib;

      microvmLib = import ./lib { inherit lib; };
      examples = import ./examples;

      systems = [
        "x86_64-linux"
        "aarch64-linux"
        "aarch64-darwin"
      ];
      forAllSystems = lib.genAttrs systems;

      exampleConfiguration =
        example:
        lib.nixosSystem {
          modules = [
            self.nixosModules.microvm
            example.module
            {
              nixpkgs.hostPlatform = example.system;
              # vfkit's guest is Linux, its runner runs on macOS.
              microvm.vmHostPackages = lib.mkIf (
                example.hostSystem != example.system
              ) nixpkgs.legacyPackages.${example.hostSystem};
            }
          ];
        };
    in
    {
      # `lib.mkGuest { system; name; … }`, and `lib.<system>.mkGuest { name; … }` as mvm spells it.
      lib =
        let
          mkGuest = import ./lib/mk-guest.nix { inherit lib; } {
            inherit (nixpkgs.lib) nixosSystem;
            microvmModule = self.nixosModules.microvm;
          };
        in
        microvmLib
        // {
          inherit mkGuest;
        }
        // forAllSystems (system: {
          mkGuest = args: mkGuest ({ inherit system; } // args);
        });

      nixosModules = {
        microvm = ./nixos-modules/microvm;
        host = ./nixos-modules/host;
        default = self.nixosModules.microvm;
      };

      overlays.default = final: _prev: {
        microvm-codegen = final.callPackage ./lib/microvm-codegen.nix { };
        microvm-nix-plugin = final.callPackage ./lib/nix-plugin.nix { };
      };

      # <hypervisor>-example: one example VM per hypervisor (examples/default.nix).
      nixosConfigurations = lib.mapAttrs' (
        hypervisor: example: lib.nameValuePair "${hypervisor}-example" (exampleConfiguration example)
      ) examples;

      packages = forAllSystems (
        system:
        let
          pkgs = nixpkgs.legacyPackages.${system};
          runners = lib.mapAttrs' (
            hypervisor: _:
            lib.nameValuePair "${hypervisor}-example"
              self.nixosConfigurations."${hypervisor}-example".config.microvm.declaredRunner
          ) (lib.filterAttrs (_: example: example.hostSystem == system) examples);
        in
        runners
        // {
          microvm-codegen = pkgs.callPackage ./lib/microvm-codegen.nix { };
          default = self.packages.${system}.microvm-codegen;
          # The evaluator plugin, for the Nix of this package set (>= 2.24, with its C API).
          microvm-nix-plugin = pkgs.callPackage ./lib/nix-plugin.nix { };
          # The options reference (doc/options.md and .json), read from the modules' option
          # declarations by the generator at build time.
          options-doc =
            pkgs.runCommand "microvm-options-doc"
              {
                nativeBuildInputs = [ self.packages.${system}.microvm-codegen ];
                src = lib.fileset.toSource {
                  root = ./.;
                  fileset = lib.fileset.unions [
                    ./nixos-modules
                    ./lib
                  ];
                };
              }
              ''
                cd "$src"
                mkdir -p "$out"
                microvm-codegen options --format markdown nixos-modules > "$out/options.md"
                microvm-codegen options --format json nixos-modules > "$out/options.json"
              '';
        }
      );

      templates = {
        microvm = {
          path = ./flake-template;
          description = "A flake with one NixOS microVM (qemu)";
        };
        guest = {
          path = ./guest-template;
          description = "A microVM described by what it runs (mvm's hello example)";
        };
        default = self.templates.microvm;
      };

      checks = forAllSystems (
        system:
        import ./checks {
          inherit self system;
          pkgs = nixpkgs.legacyPackages.${system};
        }
      );

      formatter = forAllSystems (system: nixpkgs.legacyPackages.${system}.nixfmt);
    };
}
