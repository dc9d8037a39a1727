# microvm.graphics.enable, guest side: the virtio-gpu driver, and two wrappers that show
# Wayland programs on the host: through virtio-gpu, or through waypipe over vsock (the host
# runs `waypipe --vsock -s 6000 client` for the latter).
{
  config,
  lib,
  pkgs,
  ...
}:

let
  runWaylandProxy = pkgs.writeShellScriptBin "run-wayland-proxy" ''
    exec ${lib.getExe pkgs.wayland-proxy-virtwl} --virtio-gpu -- "$@"
  '';
  runWaypipe = pkgs.writeShellScriptBin "run-waypipe" ''
    exec ${lib.getExe pkgs.waypipe} --vsock -s 2:6000 server "$@"
  '';
in
lib.mkIf config.microvm.graphics.enable {
  boot.kernelModules = [
    "drm"
    "virtio_gpu"
  ];
  environment.systemPackages = [
    runWaylandProxy
    runWaypipe
  ];
}
