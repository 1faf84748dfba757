"""cloudcore's DeviceController: Devices and DeviceModels down to the edge node in `spec.nodeName`,
reported twins and device states up into the Device.

Layout: `kinds` (the two CRD kinds), `plan` (who gets which push on a Device or DeviceModel event;
pure), `messages` (message shapes and status patches; pure), `downstream` (informers to CloudHub),
`upstream` (edge reports to the API), `module` (the module itself). The informer, the JSON client and
the sender are the edgecontroller's.
"""

from cloudcore.devicecontroller.module import DeviceControllerModule

__all__ = ["DeviceControllerModule"]
