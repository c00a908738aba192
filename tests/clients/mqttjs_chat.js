// Drives the mqrs gate with MQTT.js (the npm package `mqtt`), the MQTT client browsers and
// Node use, written by nobody on this team.
//
// Usage: node mqttjs_chat.js URL USER [CA_FILE]
// URL is ws://host:port/mqtt, wss://host:port/mqtt or mqtt://host:port; with CA_FILE the
// server's certificate is checked against it (and always checked for wss://).
// Prints one JSON object per line: {"topic": ..., "reply": ...} per request, in order, then
// {"heard": topic, "body": ...} for the chat message the user heard.
"use strict";
const fs = require("fs");
const mqtt = require("mqtt");

const [url, user, caFile] = process.argv.slice(2);
const options = {
  clientId: "mqttjs-" + user,
  protocolVersion: 4,
  keepalive: 30,
  reconnectPeriod: 0,
  connectTimeout: 5000,
};
if (caFile) {
  options.ca = fs.readFileSync(caFile);
  options.rejectUnauthorized = true;
}

const client = mqtt.connect(url, options);
const waiting = new Map();
const pushed = [];
client.on("message", (topic, payload) => {
  const body = JSON.parse(payload.toString("utf8"));
  const w = waiting.get(topic);
  if (w) {
    waiting.delete(topic);
    w(body);
  } else {
    pushed.push({ topic, body });
  }
});
client.on("error", (e) => {
  console.error("MQTT.js error: " + e.message);
  process.exit(1);
});

function request(topic, body, qos) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("no reply on " + topic)), 5000);
    waiting.set(topic, (reply) => {
      clearTimeout(timer);
      resolve(reply);
    });
    client.publish(topic, JSON.stringify(body), { qos });
  });
}

client.on("connect", async () => {
  try {
    // The gate sends replies on the request topic and pushes on any topic: take them all.
    await client.subscribeAsync("#", { qos: 1 }).catch(() => {});
    const steps = [
      ["Login/HD_Login/1", { userName: user, passWord: "secret" }, 1],
      ["Chat/HD_JoinChat/2", { roomName: "mqttjs" }, 0],
      ["Chat/HD_Say/3", { text: "hello from MQTT.js" }, 1],
    ];
    for (const [topic, body, qos] of steps) {
      const reply = await request(topic, body, qos);
      console.log(JSON.stringify({ topic, reply }));
    }
    const deadline = Date.now() + 5000;
    while (!pushed.some((p) => p.topic === "Chat/OnSay") && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 20));
    }
    const said = pushed.find((p) => p.topic === "Chat/OnSay");
    if (!said) throw new Error("no Chat/OnSay heard");
    console.log(JSON.stringify({ heard: said.topic, body: said.body }));
    await client.endAsync();
    process.exit(0);
  } catch (e) {
    console.error(e.message);
    process.exit(1);
  }
});
