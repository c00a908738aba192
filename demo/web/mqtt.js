// A small MQTT 3.1.1 client over WebSocket for the demo's chat page, written for mqrs (no
// library): CONNECT, SUBSCRIBE, PUBLISH at QoS 0 and 1 (with PUBACK both ways), PINGREQ and
// DISCONNECT. Incoming bytes go through a stream decoder, so a packet split over several
// WebSocket frames and several packets in one frame are both read.
//
// In a page it is `window.MiniMqtt`; under Node (its tests) it is `require("./mqtt.js")`.
(function (root) {
  "use strict";

  const utf8 = new TextEncoder();
  const fromUtf8 = new TextDecoder("utf-8");

  /** Packet types (MQTT 3.1.1 §2.2.1). */
  const TYPE = {
    CONNECT: 1, CONNACK: 2, PUBLISH: 3, PUBACK: 4, SUBSCRIBE: 8, SUBACK: 9,
    PINGREQ: 12, PINGRESP: 13, DISCONNECT: 14,
  };

  /** What CONNACK return codes mean (§3.2.2.3). */
  const REFUSED = {
    1: "unacceptable protocol version",
    2: "identifier rejected",
    3: "server unavailable",
    4: "bad user name or password",
    5: "not authorized",
  };

  /** Bytes of `n` as a Remaining Length (§2.2.3): 7 bits per byte, at most 4 bytes. */
  function encodeLength(n) {
    if (n < 0 || n > 268435455) throw new RangeError("packet too large: " + n);
    const out = [];
    do {
      let b = n % 128;
      n = Math.floor(n / 128);
      if (n > 0) b |= 0x80;
      out.push(b);
    } while (n > 0);
    return out;
  }

  /** A UTF-8 string with its 2-byte length (§1.5.3). */
  function str(s) {
    const b = utf8.encode(s);
    if (b.length > 65535) throw new RangeError("string over 65535 bytes");
    return [b.length >> 8, b.length & 0xff, ...b];
  }

  /** One packet: the first byte, then the rest with its length in front. */
  function packet(first, body) {
    const head = [first, ...encodeLength(body.length)];
    const out = new Uint8Array(head.length + body.length);
    out.set(head, 0);
    out.set(body, head.length);
    return out;
  }

  /** CONNECT with a clean session; `username` and `password` when given. */
  function connect({ clientId, keepalive = 30, username, password }) {
    let flags = 0x02;
    const payload = str(clientId || "");
    if (username !== undefined) {
      flags |= 0x80;
      payload.push(...str(username));
    }
    if (password !== undefined) {
      if (username === undefined) throw new Error("a password needs a user name (§3.1.2.9)");
      flags |= 0x40;
      payload.push(...str(password));
    }
    const body = [...str("MQTT"), 4, flags, keepalive >> 8, keepalive & 0xff, ...payload];
    return packet(TYPE.CONNECT << 4, body);
  }

  /** PUBLISH of `payload` (a string or bytes) at QoS 0 or 1 (with `id`). */
  function publish(topic, payload, qos = 0, id = 0) {
    const data = typeof payload === "string" ? utf8.encode(payload) : payload;
    const body = str(topic);
    if (qos > 0) body.push(id >> 8, id & 0xff);
    const head = [(TYPE.PUBLISH << 4) | (qos << 1), ...encodeLength(body.length + data.length)];
    const out = new Uint8Array(head.length + body.length + data.length);
    out.set(head, 0);
    out.set(body, head.length);
    out.set(data, head.length + body.length);
    return out;
  }

  function subscribe(id, filter, qos = 0) {
    return packet((TYPE.SUBSCRIBE << 4) | 0x02, [id >> 8, id & 0xff, ...str(filter), qos]);
  }

  function puback(id) {
    return packet(TYPE.PUBACK << 4, [id >> 8, id & 0xff]);
  }

  const pingreq = () => packet(TYPE.PINGREQ << 4, []);
  const disconnect = () => packet(TYPE.DISCONNECT << 4, []);

  /** Reads packets out of a byte stream that arrives in pieces of any size. */
  class Decoder {
    constructor(maxPacket = 1 << 20) {
      this.buf = new Uint8Array(0);
      this.maxPacket = maxPacket;
    }

    /** Adds `bytes`; returns every packet now complete, in order. */
    push(bytes) {
      const joined = new Uint8Array(this.buf.length + bytes.length);
      joined.set(this.buf, 0);
      joined.set(bytes, this.buf.length);
      this.buf = joined;
      const out = [];
      for (;;) {
        const p = this.next();
        if (!p) return out;
        out.push(p);
      }
    }

    next() {
      const b = this.buf;
      if (b.length < 2) return null;
      let len = 0;
      let mult = 1;
      let i = 1;
      for (;;) {
        if (i >= b.length) return null;
        if (i > 4) throw new Error("malformed remaining length");
        len += (b[i] & 0x7f) * mult;
        mult *= 128;
        if ((b[i++] & 0x80) === 0) break;
      }
      if (len > this.maxPacket) throw new Error("packet of " + len + " bytes is too large");
      if (b.length < i + len) return null;
      const body = b.subarray(i, i + len);
      this.buf = b.slice(i + len);
      return decode(b[0], body);
    }
  }

  /** One packet from its first byte and body. */
  function decode(first, body) {
    const type = first >> 4;
    const u16 = (at) => (body[at] << 8) | body[at + 1];
    switch (type) {
      case TYPE.CONNACK:
        return { type: "connack", sessionPresent: (body[0] & 1) === 1, code: body[1] };
      case TYPE.PUBLISH: {
        const qos = (first >> 1) & 3;
        const tlen = u16(0);
        const topic = fromUtf8.decode(body.subarray(2, 2 + tlen));
        let at = 2 + tlen;
        let id = 0;
        if (qos > 0) {
          id = u16(at);
          at += 2;
        }
        const payload = body.slice(at);
        return { type: "publish", topic, qos, id, payload, text: () => fromUtf8.decode(payload) };
      }
      case TYPE.PUBACK:
        return { type: "puback", id: u16(0) };
      case TYPE.SUBACK:
        return { type: "suback", id: u16(0), codes: Array.from(body.subarray(2)) };
      case TYPE.PINGRESP:
        return { type: "pingresp" };
      default:
        return { type: "other", packetType: type, body };
    }
  }

  /**
   * An MQTT connection over a WebSocket. `url` is ws:// or wss://; `WebSocketImpl` the
   * WebSocket constructor (the page's own by default). Events: `onmessage(topic, text, packet)`,
   * `onclose(reason)`.
   */
  class Client {
    constructor(url, options = {}, WebSocketImpl = root.WebSocket) {
      this.url = url;
      this.options = options;
      this.WebSocketImpl = WebSocketImpl;
      this.nextId = 1;
      this.acks = new Map();
      this.decoder = new Decoder();
      this.onmessage = () => {};
      this.onclose = () => {};
    }

    /** Opens the connection; resolves once CONNACK accepts it, rejects with the reason. */
    connect() {
      return new Promise((resolve, reject) => {
        const ws = new this.WebSocketImpl(this.url, "mqtt");
        ws.binaryType = "arraybuffer";
        this.ws = ws;
        let accepted = false;
        ws.onopen = () => ws.send(connect(this.options));
        ws.onerror = () => {
          if (!accepted) reject(new Error("cannot reach " + this.url));
        };
        ws.onclose = () => {
          clearInterval(this.pinger);
          for (const [, a] of this.acks) a.reject(new Error("connection closed"));
          this.acks.clear();
          if (!accepted) reject(new Error("connection closed before CONNACK"));
          else this.onclose(this.closeReason || "connection closed");
        };
        ws.onmessage = (ev) => {
          let packets;
          try {
            packets = this.decoder.push(new Uint8Array(ev.data));
          } catch (e) {
            this.closeReason = e.message;
            ws.close();
            return;
          }
          for (const p of packets) {
            if (p.type === "connack") {
              if (p.code !== 0) {
                reject(new Error("refused: " + (REFUSED[p.code] || "code " + p.code)));
                ws.close();
                return;
              }
              accepted = true;
              const every = (this.options.keepalive || 30) * 1000 * 0.75;
              this.pinger = setInterval(() => this.send(pingreq()), every);
              resolve(this);
            } else if (p.type === "publish") {
              if (p.qos === 1) this.send(puback(p.id));
              this.onmessage(p.topic, p.text(), p);
            } else if (p.type === "puback" || p.type === "suback") {
              const waiting = this.acks.get(p.id);
              if (waiting) {
                this.acks.delete(p.id);
                waiting.resolve(p);
              }
            }
          }
        };
      });
    }

    send(bytes) {
      if (this.ws && this.ws.readyState === 1) this.ws.send(bytes);
    }

    id() {
      const id = this.nextId;
      this.nextId = id === 65535 ? 1 : id + 1;
      return id;
    }

    /** Waits for the acknowledgement of packet `id`. */
    acked(id) {
      return new Promise((resolve, reject) => this.acks.set(id, { resolve, reject }));
    }

    /** Publishes; at QoS 1 resolves once the server's PUBACK arrives. */
    publish(topic, payload, qos = 0) {
      if (qos === 0) {
        this.send(publish(topic, payload, 0));
        return Promise.resolve();
      }
      const id = this.id();
      const done = this.acked(id);
      this.send(publish(topic, payload, 1, id));
      return done;
    }

    /** Subscribes to `filter`; resolves with the SUBACK. */
    subscribe(filter, qos = 0) {
      const id = this.id();
      const done = this.acked(id);
      this.send(subscribe(id, filter, qos));
      return done;
    }

    /** Says goodbye and closes. */
    end() {
      this.send(disconnect());
      if (this.ws) this.ws.close();
    }
  }

  const api = {
    Client, Decoder, REFUSED,
    encode: { connect, publish, subscribe, puback, pingreq, disconnect, encodeLength },
  };
  if (typeof module !== "undefined" && module.exports) module.exports = api;
  else root.MiniMqtt = api;
})(typeof globalThis !== "undefined" ? globalThis : this);
