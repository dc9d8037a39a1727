{
  description = "A NixOS microVM";

  inputs = {
    nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";
    # This project's flake; a local checkout works too: "path:/home/me/src/microvm-codegen".
    microvm = {
      url = "github:microvm-codegen/microvm-codegen";
      inputs.nixpkgs.follows = "nixpkgs";
    };
  };

  outputs =
    {
      self,
      nixpkgs,
      microvm,
    }:
    let
      system = "x86_64-linux";
    in
    {
      # `nix run .#my-microvm` (or just `nix run`) starts the VM in the foreground, with its
      # console on the terminal. Files it creates (var.img, control.socket) land in the
      # current directory.
      packages.${system} = {
        default = self.packages.${system}.my-microvm;
        my-microvm = self.nixosConfigurations.my-microvm.config.microvm.declaredRunner;
      };

      nixosConfigurations.my-microvm = nixpkgs.lib.nixosSystem {
        inherit system;
        modules = [
          # The guest module: the microvm.* options.
          microvm.nixosModules.microvm
          {
            networking.hostName = "my-microvm";
            system.stateVersion = "26.05";
            # Log in on the console as root without a password; change this before the VM
            # holds anything of value.
            users.users.root.password = "";

            microvm = {
              # qemu has 9p built in and runs anywhere; see the README for the others.
              hypervisor = "qemu";
              # The control socket `microvm-shutdown` talks to, relative to the directory the
              # VM runs in.
              socket = "control.socket";

              # A disk image for /var, created (ext4, 256 MiB) on the first start and kept after.
              volumes = [
                {
                  image = "var.img";
                  mountPoint = "/var";
                  size = 256;
                }
              ];

              # The host's /nix/store, read-only: no store image has to be built, and the VM
              # starts as soon as its closure is on the host. A VM started by systemd should
              # use proto = "virtiofs" instead (faster; needs virtiofsd running beside it).
              shares = [
                {
                  proto = "9p";
                  tag = "ro-store";
                  source = "/nix/store";
                  mountPoint = "/nix/.ro-store";
                }
              ];

              # qemu's user-mode network: NAT to the host's network, no root needed. The guest
              # gets its address by DHCP.
              interfaces = [
                {
                  type = "user";
                  id = "usernet";
                  mac = "02:00:00:00:00:01";
                }
              ];
            };
          }
        ];
      };
    };
}
