// A Matrix person on matrix-js-sdk with Rust crypto (the SDK under Element), for e2e tests.
//
// Protocol: one JSON object per line. stdin: {"id": 1, "cmd": "send_text", ...arguments};
// stdout: {"id": 1, "ok": true, "result": ...} or {"id": 1, "ok": false, "error": "..."}.
// Commands run concurrently (a `wait` does not block a `send_text`). stdout carries nothing
// else: every log line (ours and the SDK's) goes to stderr. The process exits when stdin
// closes, so it never outlives the test that started it.
//
// The person is what a careful Element user looks like: it logs in with its password,
// bootstraps its own cross-signing (the device is signed by the user's self-signing key) and
// runs in "exclude insecure devices" mode (OnlySignedDevicesIsolationMode, MSC4153): room keys
// go only to devices cross-signed by their owner and messages from other devices fail to
// decrypt. `login` can turn off either for negative tests.

import { createCipheriv, createDecipheriv, createHash, randomBytes } from "node:crypto";
import { createInterface } from "node:readline";

import * as sdk from "matrix-js-sdk";
import { logger } from "matrix-js-sdk/lib/logger.js";

const { AllDevicesIsolationMode, OnlySignedDevicesIsolationMode } = sdk.Crypto;
const REPLY_TO = "lambda.surface.reply_to"; // the bot's machine-readable "answer to" field
// Failures of trust in the sender's device (as opposed to a missing or withheld room key).
const TRUST_FAILURES = new Set(["UNSIGNED_SENDER_DEVICE", "UNKNOWN_SENDER_DEVICE"]);

// --- logging: stdout is the protocol channel -----------------------------------------------

// The Rust crypto traces at debug level through console.debug/info: kept only on request.
const protocolOut = process.stdout.write.bind(process.stdout);
const toStderr = (...args) => process.stderr.write(args.map(String).join(" ") + "\n");
const verbose = Boolean(process.env.JSCLIENT_DEBUG);
const quiet = verbose ? toStderr : () => {};
Object.assign(console, { log: toStderr, info: quiet, debug: quiet, trace: quiet, warn: toStderr });
logger.setLevel(verbose ? "debug" : "warn");
const log = (msg) => toStderr(`[person ${me.userId ?? "-"}] ${msg}`);

// --- state ------------------------------------------------------------------------------------

const me = { client: null, userId: null, password: null };
const seen = new Map(); // event id -> MatrixEvent, in arrival order (incl. edits, failures)
const everFailed = new Set(); // event ids that lacked their room key at some point
const joinedByUs = new Set();
let sleepers = []; // resolved on every new or (re)decrypted event, sync, device update

function wake() {
  const woken = sleepers;
  sleepers = [];
  for (const resolve of woken) resolve();
}

/** `await probe()` until it is truthy (re-checked on every wake); throws after `timeoutMs`. */
async function waitUntil(probe, timeoutMs, what) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const woken = new Promise((resolve) => sleepers.push(resolve)); // before probing: no lost wake
    const result = await probe();
    if (result) return result;
    const left = deadline - Date.now();
    if (left <= 0) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    let timer;
    await Promise.race([woken, new Promise((resolve) => (timer = setTimeout(resolve, left)))]);
    clearTimeout(timer);
  }
}

/** Wait until a sync shows us joined to `roomId`: only then does the crypto know its state. */
function joinedInSync(roomId) {
  const joined = () => client().getRoom(roomId)?.getMyMembership() === "join";
  return waitUntil(joined, 30_000, `our join of ${roomId} to come down the sync`);
}

function client() {
  if (!me.client) throw new Error("not logged in");
  return me.client;
}

// --- views: events as a test (and Element) sees them ------------------------------------------

function relation(event) {
  // The relation stays in the clear on encrypted events; the SDK may also copy it inside.
  return event.getWireContent()["m.relates_to"] ?? event.getOriginalContent()["m.relates_to"];
}

function isEdit(event) {
  return relation(event)?.rel_type === "m.replace";
}

/** The latest edit of `original` by its own sender (what Element shows), or null. */
function latestEdit(original) {
  let best = null;
  for (const event of seen.values()) {
    const rel = relation(event);
    if (rel?.rel_type !== "m.replace" || rel.event_id !== original.getId()) continue;
    if (event.getSender() !== original.getSender() || event.isDecryptionFailure()) continue;
    if (!best || event.getTs() >= best.getTs()) best = event;
  }
  return best;
}

function view(event) {
  const content = event.getOriginalContent();
  const edit = latestEdit(event);
  const shown = edit ? (edit.getOriginalContent()["m.new_content"] ?? {}) : content;
  const edits = [...seen.values()].filter(
    (e) => isEdit(e) && relation(e).event_id === event.getId() && !e.isDecryptionFailure(),
  ).length;
  return {
    event_id: event.getId(),
    room_id: event.getRoomId(),
    sender: event.getSender(),
    type: event.getType(),
    state_key: event.getStateKey() ?? null,
    encrypted: event.isEncrypted(),
    undecryptable: event.isDecryptionFailure(),
    failure: event.decryptionFailureReason ?? null,
    msgtype: shown.msgtype ?? content.msgtype ?? null,
    text: shown.body ?? null,
    edits,
    reply_to: content[REPLY_TO] ?? relation(event)?.["m.in_reply_to"]?.event_id ?? null,
    content,
  };
}

/** Views of the events (edits folded into their originals) that match `criteria`. */
function matching(criteria) {
  const out = [];
  for (const event of seen.values()) {
    if (isEdit(event) || event.isBeingDecrypted?.()) continue;
    const v = view(event);
    const c = criteria;
    if (c.room_id && v.room_id !== c.room_id) continue;
    if (c.sender && v.sender !== c.sender) continue;
    if (c.not_sender && v.sender === c.not_sender) continue;
    if (c.type && v.type !== c.type) continue;
    if (c.msgtype && v.msgtype !== c.msgtype) continue;
    if (c.reply_to && v.reply_to !== c.reply_to) continue;
    if (c.undecryptable !== undefined && v.undecryptable !== c.undecryptable) continue;
    if (c.failure && v.failure !== c.failure) continue;
    if (c.text !== undefined && v.text !== c.text) continue;
    if (c.text_contains !== undefined && !(v.text ?? "").includes(c.text_contains)) continue;
    out.push(v);
  }
  return out;
}

function remember(event) {
  if (!event.getId() || event.getId().startsWith("~")) return; // local echo
  seen.set(event.getId(), event);
  if (event.isDecryptionFailure() && !TRUST_FAILURES.has(event.decryptionFailureReason)) {
    everFailed.add(event.getId()); // a missing or withheld key, even if it comes later
  }
  wake();
}

// A strict client decides whether to trust the sender when it decrypts. A message that came
// in before the sender's keys were downloaded (a join and a first message in the same sync)
// fails as "unsigned/unknown device" and js-sdk 36 never looks again; a client reloaded
// later would show it. So once we learn a user's keys, such events are decrypted again: a
// device that really is not cross-signed fails again, for the same reason.
function retryTrust(userIds) {
  const users = new Set(userIds);
  for (const event of seen.values()) {
    if (users.has(event.getSender()) && TRUST_FAILURES.has(event.decryptionFailureReason)) {
      event.attemptDecryption(client().getCrypto(), { isRetry: true }).catch(() => {});
    }
  }
  wake();
}

// --- attachments (the spec's v2 format: AES-CTR-256, SHA-256 of the ciphertext) -------------

const unpadded = (buf) => buf.toString("base64").replace(/=+$/, "");

function encryptAttachment(data) {
  const key = randomBytes(32);
  const iv = Buffer.concat([randomBytes(8), Buffer.alloc(8)]); // counter half starts at 0
  const cipher = createCipheriv("aes-256-ctr", key, iv);
  const ciphertext = Buffer.concat([cipher.update(data), cipher.final()]);
  const info = {
    v: "v2",
    key: {
      kty: "oct",
      key_ops: ["encrypt", "decrypt"],
      alg: "A256CTR",
      k: key.toString("base64url"),
      ext: true,
    },
    iv: unpadded(iv),
    hashes: { sha256: unpadded(createHash("sha256").update(ciphertext).digest()) },
  };
  return { ciphertext, info };
}

function decryptAttachment(ciphertext, info) {
  if (info.v !== "v2") throw new Error(`attachment version ${info.v}`);
  const digest = unpadded(createHash("sha256").update(ciphertext).digest());
  if (digest !== info.hashes?.sha256) throw new Error("attachment sha256 mismatch");
  const key = Buffer.from(info.key.k, "base64url");
  const decipher = createDecipheriv("aes-256-ctr", key, Buffer.from(info.iv, "base64"));
  return Buffer.concat([decipher.update(ciphertext), decipher.final()]);
}

async function downloadMxc(mxc) {
  const [server, mediaId] = mxc.replace(/^mxc:\/\//, "").split("/", 2);
  const url = `${client().baseUrl}/_matrix/client/v1/media/download/${server}/${mediaId}`;
  const response = await fetch(url, {
    headers: { Authorization: `Bearer ${client().getAccessToken()}` },
  });
  if (!response.ok) throw new Error(`download ${mxc}: HTTP ${response.status}`);
  return Buffer.from(await response.arrayBuffer());
}

// --- commands -----------------------------------------------------------------------------------

const commands = {
  /** Log in with the password from $JSCLIENT_PASSWORD (kept out of the protocol). */
  async login({ base_url, user_id, cross_signing = true, only_signed = true }) {
    const password = process.env.JSCLIENT_PASSWORD;
    const anonymous = sdk.createClient({ baseUrl: base_url });
    const session = await anonymous.login("m.login.password", {
      identifier: { type: "m.id.user", user: user_id },
      password,
      initial_device_display_name: "jsclient person",
    });
    const c = sdk.createClient({
      baseUrl: base_url,
      userId: session.user_id,
      deviceId: session.device_id,
      accessToken: session.access_token,
    });
    Object.assign(me, { client: c, userId: session.user_id, password });
    await c.initRustCrypto({ useIndexedDB: false });
    const crypto = c.getCrypto();
    crypto.setDeviceIsolationMode(
      only_signed ? new OnlySignedDevicesIsolationMode() : new AllDevicesIsolationMode(false),
    );
    c.on(sdk.RoomEvent.Timeline, (event) => remember(event));
    c.on(sdk.MatrixEventEvent.Decrypted, (event) => remember(event));
    c.on(sdk.RoomEvent.MyMembership, () => wake());
    c.on(sdk.ClientEvent.Sync, () => wake()); // a sync is fully applied: re-check everything
    c.on(sdk.Crypto.CryptoEvent.DevicesUpdated, (userIds) => retryTrust(userIds));
    c.on(sdk.Crypto.CryptoEvent.UserTrustStatusChanged, (userId) => retryTrust([userId]));
    const prepared = new Promise((resolve) =>
      c.on(sdk.ClientEvent.Sync, (state) => state === "PREPARED" && resolve()),
    );
    await c.startClient({ initialSyncLimit: 50 });
    await prepared;
    if (cross_signing) {
      await crypto.bootstrapCrossSigning({
        authUploadDeviceSigningKeys: (makeRequest) => makeRequest(passwordAuth()),
      });
    }
    const ready = await crypto.isCrossSigningReady();
    log(`logged in as device ${session.device_id}, cross-signed: ${ready}`);
    return { user_id: session.user_id, device_id: session.device_id, cross_signed: ready };
  },

  /** Wait for `count` invites (from `inviter`, if given) not yet joined; join and return them. */
  async accept_invites({ count = 1, inviter, timeout = 30 }) {
    const pending = () => {
      const rooms = client()
        .getRooms()
        .filter((r) => r.getMyMembership() === "invite" && !joinedByUs.has(r.roomId))
        .filter((r) => !inviter || r.getMember(me.userId)?.events.member?.getSender() === inviter);
      return rooms.length >= count ? rooms.map((r) => r.roomId) : null;
    };
    const rooms = await waitUntil(pending, timeout * 1000, `${count} invite(s)`);
    for (const roomId of rooms) await commands.join({ room_id: roomId });
    return rooms;
  },

  async join({ room_id }) {
    joinedByUs.add(room_id);
    await client().joinRoom(room_id);
    await joinedInSync(room_id);
    return room_id;
  },

  async invite({ room_id, user_id }) {
    await client().invite(room_id, user_id);
    return null;
  },

  /** An encrypted DM like Element makes: is_direct, trusted_private_chat, m.direct. */
  async create_dm({ user_id, encrypted = true }) {
    const initial_state = encrypted
      ? [{ type: "m.room.encryption", state_key: "", content: { algorithm: "m.megolm.v1.aes-sha2" } }]
      : [];
    const { room_id } = await client().createRoom({
      is_direct: true,
      invite: [user_id],
      preset: "trusted_private_chat",
      initial_state,
    });
    joinedByUs.add(room_id);
    await joinedInSync(room_id);
    const direct = client().getAccountData("m.direct")?.getContent() ?? {};
    direct[user_id] = [...(direct[user_id] ?? []), room_id];
    await client().setAccountData("m.direct", direct);
    return room_id;
  },

  /** A text message; `replaces` makes it an edit of that event (the new text as Element sends it). */
  async send_text({ room_id, body, msgtype = "m.text", reply_to, replaces }) {
    let content = { msgtype, body };
    if (reply_to) content["m.relates_to"] = { "m.in_reply_to": { event_id: reply_to } };
    if (replaces) {
      content = {
        msgtype,
        body: `* ${body}`,
        "m.new_content": { msgtype, body },
        "m.relates_to": { rel_type: "m.replace", event_id: replaces },
      };
    }
    const { event_id } = await client().sendEvent(room_id, "m.room.message", content);
    return event_id;
  },

  /** Upload `data_b64` encrypted (v2 attachment) and post it as m.file; returns the event id. */
  async send_file({ room_id, name, data_b64, mimetype = "application/octet-stream" }) {
    const data = Buffer.from(data_b64, "base64");
    const { ciphertext, info } = encryptAttachment(data);
    const { content_uri } = await client().uploadContent(ciphertext, {
      type: "application/octet-stream",
      includeFilename: false,
    });
    const content = {
      msgtype: "m.file",
      body: name,
      filename: name,
      info: { mimetype, size: data.length },
      file: { ...info, url: content_uri },
    };
    const { event_id } = await client().sendEvent(room_id, "m.room.message", content);
    return event_id;
  },

  /** Events matching `criteria` (see `matching`), at once. */
  async events(criteria) {
    return matching(criteria);
  },

  /** Wait until at least `count` events match; returns all that match. */
  async wait({ count = 1, timeout = 30, ...criteria }) {
    const probe = () => {
      const found = matching(criteria);
      return found.length >= count ? found : null;
    };
    return waitUntil(probe, timeout * 1000, `${count} event(s) matching ${JSON.stringify(criteria)}`);
  },

  /** Download the attachment of `event_id` (decrypting a `file` object); sha256 hex of the data. */
  async download({ event_id }) {
    const event = seen.get(event_id);
    if (!event) throw new Error(`unknown event ${event_id}`);
    const content = event.getOriginalContent();
    const encrypted = Boolean(content.file);
    const raw = await downloadMxc(encrypted ? content.file.url : content.url);
    const data = encrypted ? decryptAttachment(raw, content.file) : raw;
    return {
      encrypted,
      size: data.length,
      sha256: createHash("sha256").update(data).digest("hex"),
      data_b64: data.toString("base64"),
    };
  },

  /** Events from `sender` (in `room_id`) undecryptable now, and that ever lacked their key. */
  async undecryptable({ sender, room_id }) {
    const mine = [...seen.values()].filter(
      (e) => (!sender || e.getSender() === sender) && (!room_id || e.getRoomId() === room_id),
    );
    const now = mine.filter((e) => e.isDecryptionFailure());
    return {
      now: now.length,
      ever: mine.filter((e) => everFailed.has(e.getId())).length,
      reasons: now.map((e) => ({ event_id: e.getId(), reason: e.decryptionFailureReason })),
    };
  },

  async joined_rooms() {
    return (await client().getJoinedRooms()).joined_rooms;
  },

  /** Current state events of a room from the server (optionally one `type`). */
  async room_state({ room_id, type }) {
    const state = await client().roomState(room_id);
    return type ? state.filter((e) => e.type === type) : state;
  },

  async is_encrypted({ room_id }) {
    const state = await client().roomState(room_id);
    return state.some((e) => e.type === "m.room.encryption");
  },

  async hierarchy({ space_id }) {
    return (await client().getRoomHierarchy(space_id)).rooms;
  },

  /** Whether `user_id`'s device `device_id` is cross-signed by its owner, as we see it. */
  async device_signed({ user_id, device_id }) {
    const crypto = client().getCrypto();
    await crypto.getUserDeviceInfo([user_id], true);
    const status = await crypto.getDeviceVerificationStatus(user_id, device_id);
    return Boolean(status?.signedByOwner);
  },

  /**
   * `user_id`'s devices as we see them, [{device_id, signed}], once `without` (a device id)
   * is gone and at least `signed` devices are cross-signed by their owner (waits up to
   * `timeout` seconds for the device list to catch up).
   */
  async devices({ user_id, without, signed = 0, timeout = 30 }) {
    const crypto = client().getCrypto();
    const probe = async () => {
      const map = (await crypto.getUserDeviceInfo([user_id], true)).get(user_id) ?? new Map();
      const list = [];
      for (const deviceId of map.keys()) {
        const status = await crypto.getDeviceVerificationStatus(user_id, deviceId);
        list.push({ device_id: deviceId, signed: Boolean(status?.signedByOwner) });
      }
      const ok = !map.has(without) && list.filter((d) => d.signed).length >= signed;
      return ok ? list : null;
    };
    return waitUntil(probe, timeout * 1000, `devices of ${user_id}`);
  },

  async stop() {
    me.client?.stopClient();
    setImmediate(() => process.exit(0));
    return true;
  },
};

function passwordAuth() {
  return {
    type: "m.login.password",
    identifier: { type: "m.id.user", user: me.userId },
    password: me.password,
  };
}

// --- main loop --------------------------------------------------------------------------------

function reply(message) {
  protocolOut(JSON.stringify(message) + "\n");
}

const lines = createInterface({ input: process.stdin, crlfDelay: Infinity });
lines.on("line", async (line) => {
  if (!line.trim()) return;
  let request;
  try {
    request = JSON.parse(line);
  } catch (err) {
    reply({ id: null, ok: false, error: `bad JSON: ${err.message}` });
    return;
  }
  const { id, cmd, ...args } = request;
  const handler = commands[cmd];
  if (!handler) {
    reply({ id, ok: false, error: `unknown command ${cmd}` });
    return;
  }
  const started = Date.now();
  try {
    reply({ id, ok: true, result: (await handler(args)) ?? null });
    log(`${cmd} done in ${Date.now() - started} ms`);
  } catch (err) {
    log(`${cmd} failed: ${err?.stack ?? err}`);
    reply({ id, ok: false, error: String(err?.message ?? err) });
  }
});
lines.on("close", () => {
  me.client?.stopClient();
  process.exit(0);
});
