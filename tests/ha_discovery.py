"""A checker for Home Assistant MQTT discovery payloads, written from Home Assistant's
documentation (the schema's required keys, types and allowed values; HA validates the
same with voluptuous in homeassistant/components/mqtt/):

* https://www.home-assistant.io/integrations/mqtt/#mqtt-discovery -- the discovery topic
  ``<discovery_prefix>/<component>/[<node_id>/]<object_id>/config``; node_id and object_id
  "must match [a-zA-Z0-9_-]+"; the payload is a JSON object (a retained message); the
  ``device`` map ties entities into the device registry, "only works when unique_id is
  set", and needs "at least one of identifiers or connections";
* https://www.home-assistant.io/integrations/binary_sensor.mqtt/ -- ``state_topic``
  (required), ``payload_on`` / ``payload_off`` (default ON / OFF), ``device_class``
  (https://www.home-assistant.io/integrations/binary_sensor/#device-class);
* https://www.home-assistant.io/integrations/sensor.mqtt/ -- ``state_topic`` (required),
  ``unit_of_measurement``, ``value_template``, ``state_class`` (measurement, total,
  total_increasing), ``device_class`` with its units
  (https://www.home-assistant.io/integrations/sensor/#device-class);
* every MQTT entity: ``availability_topic`` xor ``availability``, ``payload_available`` /
  ``payload_not_available`` (default online / offline), ``qos`` 0..2, ``entity_category``
  (config, diagnostic)."""

import re

__all__ = ["check_discovery"]

ID = re.compile(r"^[a-zA-Z0-9_-]+$")
TOPIC = re.compile(r"^(?P<prefix>[^/+#]+)/(?P<component>[a-z_]+)/(?:(?P<node_id>[^/]+)/)?"
                   r"(?P<object_id>[^/]+)/config$")

BINARY_SENSOR_CLASSES = {
    "battery", "battery_charging", "carbon_monoxide", "cold", "connectivity", "door",
    "garage_door", "gas", "heat", "light", "lock", "moisture", "motion", "moving",
    "occupancy", "opening", "plug", "power", "presence", "problem", "running", "safety",
    "smoke", "sound", "tamper", "update", "vibration", "window"}
# sensor device classes used here, with the units HA accepts for them
SENSOR_CLASS_UNITS = {"duration": {"d", "h", "min", "s", "ms", "\u00b5s"},
                      "power": {"mW", "W", "kW", "MW", "GW", "TW", "BTU/h"},
                      "temperature": {"\u00b0C", "\u00b0F", "K"}}
STATE_CLASSES = {"measurement", "total", "total_increasing"}
COMMON = {"name": (str, type(None)), "unique_id": str, "availability_topic": str,
          "availability": list, "payload_available": str, "payload_not_available": str,
          "device": dict, "origin": dict, "qos": int, "icon": str, "entity_category": str,
          "value_template": str, "json_attributes_topic": str, "expire_after": int,
          "enabled_by_default": bool, "force_update": bool, "encoding": str}
ALLOWED = {"binary_sensor": dict(COMMON, state_topic=str, payload_on=str, payload_off=str,
                                 device_class=str, off_delay=int),
           "sensor": dict(COMMON, state_topic=str, unit_of_measurement=str, device_class=str,
                          state_class=str, suggested_display_precision=int)}
DEVICE = {"identifiers": (list, str), "connections": list, "name": str, "manufacturer": str,
          "model": str, "sw_version": str, "hw_version": str, "suggested_area": str,
          "configuration_url": str, "via_device": str, "serial_number": str}


def check_discovery(topic, config, prefix="homeassistant"):
    """[problems] of one discovery message (an empty list: valid)."""
    bad = []
    m = TOPIC.match(topic)
    if not m or m.group("prefix") != prefix:
        return ["topic %r is not %s/<component>/[<node_id>/]<object_id>/config" % (topic,
                                                                                  prefix)]
    comp = m.group("component")
    for level in ("node_id", "object_id"):
        if m.group(level) is not None and not ID.match(m.group(level)):
            bad.append("%s %r does not match [a-zA-Z0-9_-]+" % (level, m.group(level)))
    if comp not in ALLOWED:
        return bad + ["component %r is not checked here" % comp]
    if not isinstance(config, dict):
        return bad + ["the payload is not a JSON object"]
    schema = ALLOWED[comp]
    for k, v in config.items():
        if k not in schema:
            bad.append("%s: unknown key %r" % (comp, k))
        elif not isinstance(v, schema[k]) or isinstance(v, bool) != (schema[k] is bool):
            bad.append("%s: %r must be %s, got %r" % (comp, k, schema[k], v))
    if not isinstance(config.get("state_topic"), str) or not config.get("state_topic"):
        bad.append("%s: state_topic is required" % comp)
    elif any(c in config["state_topic"] for c in "+#"):
        bad.append("state_topic %r holds a wildcard" % config["state_topic"])
    if "availability_topic" in config and "availability" in config:
        bad.append("availability_topic and availability must not be used together")
    if config.get("qos", 0) not in (0, 1, 2):
        bad.append("qos must be 0, 1 or 2")
    if config.get("entity_category", "diagnostic") not in ("config", "diagnostic"):
        bad.append("entity_category must be config or diagnostic")
    dev = config.get("device")
    if dev is not None:
        if "unique_id" not in config:
            bad.append("device needs unique_id")
        if not dev.get("identifiers") and not dev.get("connections"):
            bad.append("device needs identifiers or connections")
        for k, v in dev.items():
            if k not in DEVICE or not isinstance(v, DEVICE[k]):
                bad.append("device: bad key %r = %r" % (k, v))
    dc = config.get("device_class")
    if comp == "binary_sensor" and dc is not None and dc not in BINARY_SENSOR_CLASSES:
        bad.append("binary_sensor device_class %r is not one of HA's" % dc)
    if comp == "sensor":
        if dc is not None:
            if dc not in SENSOR_CLASS_UNITS:
                bad.append("sensor device_class %r is not checked here" % dc)
            elif config.get("unit_of_measurement") not in SENSOR_CLASS_UNITS[dc]:
                bad.append("sensor device_class %s does not take the unit %r"
                           % (dc, config.get("unit_of_measurement")))
        if config.get("state_class", "measurement") not in STATE_CLASSES:
            bad.append("state_class %r is not one of %s" % (config["state_class"],
                                                            sorted(STATE_CLASSES)))
    return bad
