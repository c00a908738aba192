// Unit tests of the chat page's MQTT client (`node --test demo/web/`): the bytes it writes
// against MQTT 3.1.1's own examples, its stream decoder fed in pieces of every size, and the
// client's exchanges over a stand-in WebSocket.
"use strict";
const test = require("node:test");
const assert = require("node:assert/strict");
const { Client, Decoder, encode } = require("./mqtt.js");

const bytes = (...xs) => Uint8Array.from(xs.flat());

test("remaining lengths are encoded as MQTT 3.1.1 §2.2.3's table says", () => {
  assert.deepEqual(encode.encodeLength(0), [0x00]);
  assert.deepEqual(encode.encodeLength(127), [0x7f]);
  assert.deepEqual(encode.encodeLength(128), [0x80, 0x01]);
  assert.deepEqual(encode.encodeLength(16383), [0xff, 0x7f]);
  assert.deepEqual(encode.encodeLength(16384), [0x80, 0x80, 0x01]);
  assert.deepEqual(encode.encodeLength(2097151), [0xff, 0xff, 0x7f]);
  assert.deepEqual(encode.encodeLength(268435455), [0xff, 0xff, 0xff, 0x7f]);
  assert.throws(() => encode.encodeLength(268435456), RangeError);
});

test("CONNECT carries the protocol name, level 4, clean session, keepalive and login", () => {
  const plain = encode.connect({ clientId: "a", keepalive: 30 });
  assert.deepEqual(
    Array.from(plain),
    [0x10, 13, 0, 4, 77, 81, 84, 84, 4, 0x02, 0, 30, 0, 1, 97],
  );
  const login = encode.connect({ clientId: "", username: "ü", password: "pw" });
  assert.equal(login[9], 0xc2, "user name, password and clean session flags");
  assert.deepEqual(Array.from(login.slice(12)), [0, 0, 0, 2, 0xc3, 0xbc, 0, 2, 112, 119]);
  assert.throws(() => encode.connect({ clientId: "x", password: "p" }), /needs a user name/);
});

test("packets split over frames and packets sharing a frame all come out, in order", () => {
  const stream = bytes(
    Array.from(encode.publish("Chat/OnSay", '{"text":"你好"}', 1, 7)),
    [0x20, 2, 0, 0], // CONNACK
    [0xd0, 0], // PINGRESP
    Array.from(encode.publish("a/b", "x".repeat(300), 0)),
  );
  for (const size of [1, 2, 3, 7, 64, stream.length]) {
    const d = new Decoder();
    const got = [];
    for (let at = 0; at < stream.length; at += size) {
      got.push(...d.push(stream.subarray(at, at + size)));
    }
    assert.deepEqual(got.map((p) => p.type), ["publish", "connack", "pingresp", "publish"], `pieces of ${size}`);
    assert.equal(got[0].topic, "Chat/OnSay");
    assert.equal(got[0].qos, 1);
    assert.equal(got[0].id, 7);
    assert.equal(got[0].text(), '{"text":"你好"}');
    assert.equal(got[3].text().length, 300);
  }
});

test("the decoder refuses a packet over its limit and a length of five bytes", () => {
  assert.throws(() => new Decoder(100).push(bytes([0x30, 0xe5, 0x01])), /too large/);
  assert.throws(() => new Decoder().push(bytes([0x30, 0xff, 0xff, 0xff, 0xff, 0x01])), /malformed/);
});

/** A WebSocket stand-in: records what is sent; `feed` plays the server. */
class FakeSocket {
  constructor(url, protocol) {
    this.url = url;
    this.protocol = protocol;
    this.sent = [];
    this.readyState = 1;
    FakeSocket.last = this;
    setImmediate(() => this.onopen());
  }
  send(b) {
    this.sent.push(Array.from(b));
  }
  close() {
    this.readyState = 3;
    setImmediate(() => this.onclose());
  }
  feed(...frames) {
    for (const f of frames) this.onmessage({ data: Uint8Array.from(f).buffer });
  }
}

test("a client connects, publishes at QoS 1, acknowledges what it receives, and ends", async () => {
  const c = new Client("ws://x/mqtt", { clientId: "t", keepalive: 60 }, FakeSocket);
  const opened = c.connect();
  await new Promise((r) => setImmediate(r));
  const ws = FakeSocket.last;
  assert.equal(ws.protocol, "mqtt");
  assert.equal(ws.sent[0][0], 0x10, "CONNECT first");
  ws.feed([0x20], [2, 0, 0]); // CONNACK split over two frames
  await opened;
  const got = [];
  c.onmessage = (topic, text) => got.push([topic, text]);
  const acked = c.publish("Chat/HD_Say/1", '{"text":"hi"}', 1);
  const pub = ws.sent[1];
  assert.equal(pub[0], 0x32, "PUBLISH at QoS 1");
  const id = (pub[pub.length - 15] << 8) | pub[pub.length - 14];
  ws.feed([0x40, 2, id >> 8, id & 0xff]);
  await acked;
  ws.feed(Array.from(encode.publish("Chat/OnSay", "hello", 1, 9)));
  assert.deepEqual(got, [["Chat/OnSay", "hello"]]);
  assert.deepEqual(ws.sent[2], [0x40, 2, 0, 9], "PUBACK for a QoS 1 message");
  c.end();
  assert.deepEqual(ws.sent[3], [0xe0, 0], "DISCONNECT");
});

test("a refused CONNECT rejects with the reason MQTT gives", async () => {
  const c = new Client("ws://x/mqtt", { clientId: "t", username: "u", password: "p" }, FakeSocket);
  const opened = c.connect();
  await new Promise((r) => setImmediate(r));
  FakeSocket.last.feed([0x20, 2, 0, 4]);
  await assert.rejects(opened, /bad user name or password/);
});
