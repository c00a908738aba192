"""Drives the mqrs gate with Eclipse Paho (Python), an MQTT client nobody on this team wrote.

Usage: python3 paho_chat.py PORT USER [tcp|ws|tls|wss] [CA_FILE]
With `ws`, it speaks MQTT over WebSocket (path /mqtt, subprotocol mqtt) instead of TCP; with
`tls` and `wss`, the same over TLS, verifying the gate's certificate and host name against
CA_FILE (the system's roots without it).
Prints one JSON object per line: {"topic": ..., "reply": ...} for each request, in order.
"""
import json
import sys
import threading

import paho.mqtt.client as mqtt

port, user = int(sys.argv[1]), sys.argv[2]
kind = sys.argv[3] if len(sys.argv) > 3 else "tcp"
ca_file = sys.argv[4] if len(sys.argv) > 4 else None
transport = "websockets" if kind in ("ws", "wss") else "tcp"
replies = {}
arrived = threading.Condition()
connected = threading.Event()


def on_connect(client, userdata, flags, reason_code, properties=None):
    connected.set()


def on_message(client, userdata, msg):
    with arrived:
        replies[msg.topic] = json.loads(msg.payload.decode("utf-8"))
        arrived.notify_all()


client = mqtt.Client(
    mqtt.CallbackAPIVersion.VERSION2,
    client_id="paho-" + user,
    protocol=mqtt.MQTTv311,
    transport=transport,
)
if transport == "websockets":
    client.ws_set_options(path="/mqtt")
if kind in ("tls", "wss"):
    client.tls_set(ca_certs=ca_file)
client.on_connect = on_connect
client.on_message = on_message
try:
    client.connect("127.0.0.1", port, keepalive=30)
except OSError as e:
    sys.exit("cannot connect: " + repr(e))
client.loop_start()
if not connected.wait(5):
    sys.exit("no CONNACK from the gate")

requests = [
    ("Login/HD_Login/1", {"userName": user, "passWord": "secret"}, 1),
    ("Chat/HD_JoinChat/2", {"roomName": "paho"}, 0),
    ("Chat/HD_JoinChat/3", {"roomName": "paho"}, 1),
    ("Login/track/4", {}, 1),
]
for topic, body, qos in requests:
    client.publish(topic, json.dumps(body), qos=qos)
    with arrived:
        if not arrived.wait_for(lambda: topic in replies, timeout=5):
            sys.exit("no reply on " + topic)
    print(json.dumps({"topic": topic, "reply": replies[topic]}, ensure_ascii=False), flush=True)

client.disconnect()
client.loop_stop()
