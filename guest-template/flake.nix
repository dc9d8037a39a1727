{
  description = "A microVM described by what it runs";

  inputs = {
    nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";
    # This project's flake; a local checkout works too: "path:/home/me/src/microvm-codegen".
    microvm = {
      url = "github:microvm-codegen/microvm-codegen";
      inputs.nixpkgs.follows = "nixpkgs";
    };
  };

  outputs =
    { nixpkgs, microvm, ... }:
    let
      system = "x86_64-linux";
      pkgs = nixpkgs.legacyPackages.${system};
    in
    {
      # `nix run` boots it; `systemctl start microvm@hello` (declared on a host) returns once
      # the health check below has passed.
      packages.${system}.default = microvm.lib.${system}.mkGuest {
        name = "hello";
        packages = [
          pkgs.python3
          pkgs.curl
        ];
        # A systemd service `hello.service` in the guest, as its own user.
        services.hello = {
          # As root, before every start.
          preStart = "mkdir -p /tmp/www && echo '<h1>Hello</h1>' > /tmp/www/index.html";
          command = "${pkgs.python3}/bin/python3 -m http.server 8080 --directory /tmp/www";
          env = {
            PORT = "8080";
          };
        };
        # Runs every 5 s; the guest reports ready once it has passed, and its state changes
        # show in `microvm status` and `systemctl status microvm@hello`.
        healthChecks.hello = {
          healthCmd = "${pkgs.curl}/bin/curl -sf http://localhost:8080/";
          healthIntervalSecs = 5;
        };
        # Reach the server from the host at localhost:8080 (qemu's user network).
        forwardPorts = [
          {
            host.port = 8080;
            guest.port = 8080;
          }
        ];
        # Any other NixOS setting.
        modules = [
          {
            users.users.root.password = "";
          }
        ];
      };
    };
}
