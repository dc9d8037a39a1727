{% include "common/header.sh" %}
# Binds this VM's PCI devices to vfio-pci and hands their IOMMU groups to the VM's user.

{{ tools.modprobe }} vfio-pci
{% for device in pci_devices %}
device={{ device }}
sysfs=/sys/bus/pci/devices/$device
if [ ! -d "$sysfs" ]; then
  echo "pci-setup: there is no PCI device $device" >&2
  exit 1
fi
if [ -L "$sysfs/driver" ]; then
  driver=$(cd -P "$sysfs/driver" && pwd)
  if [ "${driver##*/}" != vfio-pci ]; then
    echo "$device" >"$sysfs/driver/unbind"
  fi
fi
echo vfio-pci >"$sysfs/driver_override"
echo "$device" >/sys/bus/pci/drivers_probe
if [ ! -e "$sysfs/iommu_group" ]; then
  echo "pci-setup: $device has no IOMMU group; enable the IOMMU (intel_iommu=on or amd_iommu=on)" >&2
  exit 1
fi
group=$(cd -P "$sysfs/iommu_group" && pwd)
{{ tools.chown }} {{ host_user }}:{{ host_group }} "/dev/vfio/${group##*/}"
{%- endfor %}
