"""DMI (Device Management Interface, gRPC package v1beta1) between edgecore and device mappers.

proto/api.proto (compiled on first use by generate.py), convert.py (Device/DeviceModel JSON <-> messages, reports
-> twin bodies; pure), catalog.py (the node's device objects; pure), registry.py (who may register; pure),
sync.py (what a mapper must be told next; pure), server.py (edgecore's DeviceManagerService on a unix socket),
pusher.py (calls to each mapper's DeviceMapperService). DeviceTwin wires them: edgecore/devicetwin/dmi.py.
Importing this package loads nothing: grpc and the proto come in with the modules that need them.
"""
