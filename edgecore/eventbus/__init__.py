"""EventBus: the MQTT side of edgecore (paho-mqtt to a real broker), topics to and from DeviceTwin and the cloud."""
