# Eval-time capability checks, read from the same table the generator embeds
# (lib/capabilities.json). The table says which hypervisor supports which feature; this file says
# which `microvm.*` values turn each feature on. That mapping mirrors `feature_uses` in
# codegen/src/capabilities.rs; the evaluation tests check that every feature of the table has an
# entry here.
{ lib }:

let
  inherit (lib) filter optional concatLists mapAttrsToList;

  table = builtins.fromJSON (builtins.readFile ./capabilities.json);

  # Feature id -> a list with one short description per place in the config that uses it.
  featureUses =
    cfg:
    let
      shares = proto: filter (s: s.proto == proto) cfg.shares;
      interfaces = type: filter (i: i.type == type) cfg.interfaces;
      describeInterface = i: ''interface "${i.id}" (type = "${i.type}")'';
      volumes = pred: filter pred cfg.volumes;
      devices = bus: filter (d: d.bus == bus) cfg.devices;
    in
    {
      "share.9p" = map (s: ''share "${s.tag}" (proto = "9p")'') (shares "9p");
      "share.9p.readOnly" = map (s: ''share "${s.tag}" (proto = "9p", readOnly = true)'') (
        filter (s: s.readOnly) (shares "9p")
      );
      "share.virtiofs" = map (s: ''share "${s.tag}" (proto = "virtiofs")'') (shares "virtiofs");
      "share.virtiofs.readOnly" = map (s: ''share "${s.tag}" (proto = "virtiofs", readOnly = true)'') (
        filter (s: s.readOnly) (shares "virtiofs")
      );
      "interface.user" = map describeInterface (interfaces "user");
      "interface.tap" = map describeInterface (interfaces "tap");
      "interface.macvtap" = map describeInterface (interfaces "macvtap");
      "interface.bridge" = map describeInterface (interfaces "bridge");
      "interface.tap.vhost" = map (i: ''interface "${i.id}" (tap.vhost = true)'') (
        filter (i: i.tap.vhost) cfg.interfaces
      );
      forwardPorts = optional (cfg.forwardPorts != [ ]) "${toString (builtins.length cfg.forwardPorts)} forwarded port(s)";
      controlSocket = optional (cfg.socket != null) ''socket = "${cfg.socket}"'';
      balloon = optional cfg.balloon "balloon = true";
      initialBalloonMem = optional (
        cfg.initialBalloonMem > 0
      ) "initialBalloonMem = ${toString cfg.initialBalloonMem}";
      hotplugMem = optional (cfg.hotplugMem > 0) "hotplugMem = ${toString cfg.hotplugMem}";
      hugepageMem = optional cfg.hugepageMem "hugepageMem = true";
      vsock =
        optional (cfg.vsock.cid != null) "vsock.cid = ${toString cfg.vsock.cid}"
        ++ optional (cfg.readiness.enable or false) "readiness.enable = true (readiness is sent over vsock)";
      "devices.pci" = map (d: ''device "${d.path}" (bus = "pci")'') (devices "pci");
      "devices.usb" = map (d: ''device "${d.path}" (bus = "usb")'') (devices "usb");
      credentialFiles = optional (
        cfg.credentialFiles != { }
      ) "credentials ${lib.concatStringsSep ", " (builtins.attrNames cfg.credentialFiles)}";
      graphics = optional cfg.graphics.enable "graphics.enable = true";
      user = optional (cfg.user != null) ''user = "${cfg.user}"'';
      cpu = optional (cfg.cpu != null) ''cpu = "${cfg.cpu}"'';
      "volume.serial" = map (v: ''volume "${v.image}" (serial = "${v.serial}")'') (
        volumes (v: v.serial != null)
      );
      "volume.direct" = map (v: ''volume "${v.image}" (direct = true)'') (volumes (v: v.direct));
      "volume.readOnly" = map (v: ''volume "${v.image}" (readOnly = true)'') (volumes (v: v.readOnly));
      "volume.imageType" = map (v: ''volume "${v.image}" (imageType = "${v.imageType}")'') (
        volumes (v: v.imageType != "raw")
      );
    };

  supports = hypervisor: id: builtins.elem hypervisor (table.features.${id}.supported or [ ]);

  hint =
    feature: hypervisor:
    lib.removeSuffix "." (
      feature.hints.${hypervisor} or feature.hints."*" or "use a hypervisor that supports it"
    );

  # Every use of a feature `hypervisor` lacks, as { feature; option; message; }. A use of a
  # feature that requires another one the hypervisor lacks is left to that one's message.
  violations =
    hypervisor: cfg:
    concatLists (
      mapAttrsToList (
        id: uses:
        let
          feature = table.features.${id} or null;
          coveredByRequired = feature ? requires && !(supports hypervisor feature.requires);
        in
        if feature == null || supports hypervisor id || coveredByRequired then
          [ ]
        else
          map (use: {
            inherit (feature) option;
            feature = id;
            message = ''${feature.option}: hypervisor "${hypervisor}" does not support ${feature.title}, used by ${use}. Hint: ${hint feature hypervisor}.'';
          }) uses
      ) (featureUses cfg)
    );
in
{
  inherit table featureUses violations;
}
