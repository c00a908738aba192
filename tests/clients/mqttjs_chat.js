// Runs the chat of mqttjs_scenario.js with MQTT.js under Node.
//
// Usage: node mqttjs_chat.js URL USER [CA_FILE]
// URL is ws://host:port/mqtt, wss://host:port/mqtt or mqtt://host:port; with CA_FILE the
// server's certificate is checked against it (and always checked for wss://).
// Prints one JSON object per line: {"topic": ..., "reply": ...} per request, in order, then
// {"heard": topic, "body": ...} for the chat message the user heard.
"use strict";
const fs = require("fs");
const mqtt = require("mqtt");
const { mqttjsChat } = require("./mqttjs_scenario.js");

const [url, user, caFile] = process.argv.slice(2);
const extra = caFile ? { ca: fs.readFileSync(caFile), rejectUnauthorized: true } : {};
mqttjsChat(mqtt, url, user, extra, (line) => console.log(JSON.stringify(line))).then(
  () => process.exit(0),
  (e) => {
    console.error("MQTT.js: " + e.message);
    process.exit(1);
  },
);
