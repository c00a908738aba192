"""A module written in Python that joins an mqrs deployment by README's wire convention alone,
with Eclipse Paho (MQTT 5), nobody on this team's code.

Usage: python3 py_module.py BROKER_PORT
Serves module `Py` (server id py-1): `add(a, b)`, `whoami()` (what arrived: user, trace context,
deadline), anything else `unknown_method`. Announces itself with a retained presence message,
with an empty retained last will. Once subscribed it prints `ready`, calls the Rust module
`Greeter/hello` with ["py"] and prints `reply <payload>` when the answer comes.
"""
import json
import sys

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

PORT = int(sys.argv[1])
SID = "py-1"
REPLY_TO = f"mqrs/reply/{SID}/only"

client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="py-module", protocol=mqtt.MQTTv5)
client.will_set(f"mqrs/presence/{SID}", b"", qos=1, retain=True)


def on_connect(c, userdata, flags, reason_code, properties):
    c.subscribe([("$share/Py/mqrs/call/Py/+", 1), (f"mqrs/call/Py@{SID}/+", 1), (REPLY_TO, 1)])


def on_subscribe(c, userdata, mid, reason_codes, properties):
    c.publish(f"mqrs/presence/{SID}", json.dumps({"modules": ["Py"]}), qos=1, retain=True)
    print("ready", flush=True)
    props = Properties(PacketTypes.PUBLISH)
    props.ResponseTopic = REPLY_TO
    props.CorrelationData = (1).to_bytes(8, "big")
    props.MessageExpiryInterval = 3
    # Trace context as the W3C trace-context-mqtt draft carries it: user properties only.
    props.UserProperty = [
        ("mqrs-timeout-ms", "3000"),
        ("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
        ("tracestate", "vendor=abc"),
    ]
    request = {"session": {"userid": "py-caller"}, "args": ["py"]}
    c.publish("mqrs/call/Greeter/hello", json.dumps(request), qos=0, properties=props)


def on_message(c, userdata, msg):
    if msg.topic == REPLY_TO:
        print("reply " + msg.payload.decode(), flush=True)
        return
    method = msg.topic.rsplit("/", 1)[1]
    request = json.loads(msg.payload)
    p = msg.properties
    user = dict(getattr(p, "UserProperty", None) or [])
    session = request.get("session", {})
    if method == "add":
        out = {"ok": sum(request["args"])}
    elif method == "whoami":
        out = {
            "ok": {
                "user": session.get("userid", ""),
                "traceparent": user.get("traceparent"),
                "session_traceparent": session.get("traceparent"),
                "timeout_ms": int(user.get("mqrs-timeout-ms", "0")),
                "expiry": getattr(p, "MessageExpiryInterval", None),
            }
        }
    else:
        out = {"err": {"kind": "unknown_method", "detail": {"module": "Py", "method": method}}}
    response_topic = getattr(p, "ResponseTopic", None)
    if response_topic:
        reply = Properties(PacketTypes.PUBLISH)
        reply.CorrelationData = p.CorrelationData
        c.publish(response_topic, json.dumps(out), qos=0, properties=reply)


client.on_connect = on_connect
client.on_subscribe = on_subscribe
client.on_message = on_message
client.connect("127.0.0.1", PORT)
client.loop_forever()
