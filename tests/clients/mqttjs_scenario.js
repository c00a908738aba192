// The chat MQTT.js (the npm package `mqtt`, written by nobody on this team) runs against the
// mqrs gate, the same under Node (mqttjs_chat.js) and in a browser page (the test
// mqttjs_browser.rs serves this file beside MQTT.js's browser bundle): connect, take every
// topic, log in, join the room `mqttjs`, say something, and hear it back on Chat/OnSay.
//
// mqttjsChat(mqtt, url, user, extra, report): `mqtt` is the library, `extra` adds connect
// options (a CA to verify with), and `report` gets {topic, reply} per request, in order, then
// {heard, body} for the message heard. The promise rejects with the reason it got no further.
"use strict";

async function mqttjsChat(mqtt, url, user, extra, report) {
  const within = (ms, what) =>
    new Promise((_, reject) => setTimeout(() => reject(new Error(what)), ms));
  const options = Object.assign(
    {
      clientId: "mqttjs-" + user,
      protocolVersion: 4,
      keepalive: 30,
      reconnectPeriod: 0,
      connectTimeout: 5000,
    },
    extra,
  );
  const client = mqtt.connect(url, options);
  const errors = [];
  const waiting = new Map();
  const pushed = [];
  client.on("error", (e) => errors.push(String((e && e.message) || e)));
  client.on("message", (topic, payload) => {
    const body = JSON.parse(new TextDecoder().decode(payload));
    const w = waiting.get(topic);
    if (w) {
      waiting.delete(topic);
      w(body);
    } else {
      pushed.push({ topic, body });
    }
  });
  await Promise.race([
    new Promise((resolve, reject) => {
      client.once("connect", resolve);
      client.once("close", () =>
        reject(new Error("closed before CONNACK: " + errors.join("; "))),
      );
    }),
    within(6000, "no CONNACK in 6 s"),
  ]);
  // The gate sends replies on the request topic and pushes on any topic: take them all.
  await client.subscribeAsync("#", { qos: 1 }).catch(() => {});
  const steps = [
    ["Login/HD_Login/1", { userName: user, passWord: "secret" }, 1],
    ["Chat/HD_JoinChat/2", { roomName: "mqttjs" }, 0],
    ["Chat/HD_Say/3", { text: "hello from MQTT.js" }, 1],
  ];
  for (const [topic, body, qos] of steps) {
    const reply = await Promise.race([
      new Promise((resolve) => {
        waiting.set(topic, resolve);
        client.publish(topic, JSON.stringify(body), { qos });
      }),
      within(5000, "no reply on " + topic),
    ]);
    report({ topic, reply });
  }
  const deadline = Date.now() + 5000;
  while (!pushed.some((p) => p.topic === "Chat/OnSay") && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 20));
  }
  const said = pushed.find((p) => p.topic === "Chat/OnSay");
  if (!said) throw new Error("no Chat/OnSay heard");
  report({ heard: said.topic, body: said.body });
  await client.endAsync();
}

if (typeof module !== "undefined") {
  module.exports = { mqttjsChat };
}
