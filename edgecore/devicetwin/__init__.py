"""DeviceTwin: upstream's device, device_attr and device_twin tables, the twin logic of mappers' MQTT topics,
and the twin/state reports to the cloud. `twin` and `messages` are sans-I/O; `store` owns SQLite, `module` the bus."""
