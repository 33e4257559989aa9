// Shutterlock private gallery viewer. Decrypts in this browser with WebCrypto; docs/SHARING.md is the format.
// Nothing here talks to anything but the share's own objects and its feedback form.
"use strict";
(() => {
  const te = new TextEncoder();
  const td = new TextDecoder("utf-8", { fatal: true });
  const LABEL = "shutterlock-share/v1/";
  const BOX_HEADER = 21; // magic 4 | kind 1 | nonce 12 | length 4
  const cfg = JSON.parse(document.getElementById("share-config").textContent);
  const app = document.getElementById("app");
  const subtle = window.crypto && window.crypto.subtle;
  const ICON = {
    heart: '<path d="M12 20.5s-7.5-4.6-9.3-9.1C1.4 8 3.6 4.5 7.1 4.5c2 0 3.4 1.1 4.9 2.9 1.5-1.8 2.9-2.9 4.9-2.9 3.5 0 5.7 3.5 4.4 6.9-1.8 4.5-9.3 9.1-9.3 9.1z"/>',
    close: '<path d="M6 6l12 12M18 6L6 18"/>',
    prev: '<path d="M15 5l-7 7 7 7"/>',
    next: '<path d="M9 5l7 7-7 7"/>',
    download: '<path d="M12 4v11m0 0l-4.5-4.5M12 15l4.5-4.5M5 19.5h14"/>',
  };

  class Problem extends Error {
    constructor(kind, detail) { super(kind); this.kind = kind; this.detail = detail || ""; }
  }

  // ---------------------------------------------------------------- small helpers

  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props || {})) {
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = value;
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else if (value !== false && value !== null && value !== undefined) node.setAttribute(key, value === true ? "" : value);
    }
    for (const child of children) if (child) node.append(child);
    return node;
  }
  function icon(name) {
    const span = document.createElement("span");
    span.innerHTML = '<svg viewBox="0 0 24 24" aria-hidden="true" focusable="false">' + ICON[name] + "</svg>";
    return span.firstChild;
  }
  function b64urlDecode(text) {
    if (!/^[A-Za-z0-9_-]*$/.test(text)) throw new Problem("badkey");
    const bin = atob(text.replace(/-/g, "+").replace(/_/g, "/") + "===".slice((text.length + 3) % 4));
    return Uint8Array.from(bin, (c) => c.charCodeAt(0));
  }
  function concat(...parts) {
    const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
    let at = 0;
    for (const part of parts) { out.set(part, at); at += part.length; }
    return out;
  }
  function padme(length) {
    if (length < 2) return length;
    const exponent = 31 - Math.clz32(length);
    const sizeBits = 32 - Math.clz32(exponent);
    const mask = (1 << (exponent - sizeBits)) - 1;
    return (length + mask) & ~mask;
  }
  function frame(data, minimum) {
    const size = Math.max(minimum, padme(data.length + 4));
    const out = new Uint8Array(size);
    new DataView(out.buffer).setUint32(0, data.length);
    out.set(data, 4);
    return out;
  }
  function formatDate(iso, withYear = true) {
    if (!iso) return "";
    const date = new Date(iso.length === 10 ? iso + "T12:00:00" : iso);
    if (Number.isNaN(date.getTime())) return "";
    return date.toLocaleDateString(undefined, withYear ? { day: "numeric", month: "long", year: "numeric" }
      : { day: "numeric", month: "long" });
  }
  function randomName() {
    return Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) => b.toString(16).padStart(2, "0")).join("");
  }

  // ---------------------------------------------------------------- crypto (docs/SHARING.md §3–§6)

  async function hkdf(ikm, label) {
    const key = await subtle.importKey("raw", ikm, "HKDF", false, ["deriveBits"]);
    const bits = await subtle.deriveBits({ name: "HKDF", hash: "SHA-256", salt: te.encode(cfg.sid),
      info: te.encode(LABEL + label) }, key, 256);
    return new Uint8Array(bits);
  }
  async function aes(raw, usage) {
    return subtle.importKey("raw", raw, "AES-GCM", false, [usage]);
  }
  async function openBox(raw, kind, name, buf, offset = 0) {
    if (buf.length < offset + BOX_HEADER) throw new Problem("damaged");
    const head = buf.subarray(offset, offset + BOX_HEADER);
    if (td.decode(head.subarray(0, 4)) !== "SLS1" || String.fromCharCode(head[4]) !== kind) throw new Problem("damaged");
    const length = new DataView(head.buffer, head.byteOffset + 17, 4).getUint32(0);
    const end = offset + BOX_HEADER + length;
    if (buf.length < end) throw new Problem("damaged");
    const ad = concat(te.encode("SLS1" + kind), te.encode(cfg.sid + "/" + name));
    const plain = new Uint8Array(await subtle.decrypt({ name: "AES-GCM", iv: head.subarray(5, 17), additionalData: ad },
      await aes(raw, "decrypt"), buf.subarray(offset + BOX_HEADER, end)));
    const size = new DataView(plain.buffer).getUint32(0);
    return [plain.subarray(4, 4 + size), end];
  }
  async function stretch(password, lock) {
    const key = await subtle.importKey("raw", te.encode(password.normalize("NFC")), "PBKDF2", false, ["deriveBits"]);
    return new Uint8Array(await subtle.deriveBits({ name: "PBKDF2", hash: "SHA-256", salt: b64urlDecode(lock.salt),
      iterations: lock.iterations }, key, 256));
  }

  async function fetchBytes(url) {
    let response;
    try {
      response = await fetch(url, { cache: "no-store", credentials: "omit", referrerPolicy: "no-referrer" });
    } catch (error) {
      throw new Problem("offline");
    }
    if (response.status === 403 || response.status === 404 || response.status === 410) throw new Problem("ended");
    if (!response.ok) throw new Problem("offline", "HTTP " + response.status);
    return new Uint8Array(await response.arrayBuffer());
  }

  // ---------------------------------------------------------------- messages

  const MESSAGES = {
    incomplete: ["This link is incomplete",
      "The key to this gallery travels in the part of the link after the # sign, and it is missing here. " +
      "Open the full link, or scan the QR code again."],
    badkey: ["This link does not open this gallery",
      "The key at the end of the link is damaged or belongs to another gallery. Copy the whole link again."],
    ended: ["This gallery is no longer available",
      "It has expired, or the photographer has withdrawn it. If you still need the photos, ask them for a new link."],
    expired: ["This gallery has expired", "It was available until {date}. Ask the photographer for a new link."],
    damaged: ["This gallery could not be opened",
      "Part of it is missing or was altered where it is stored, so it was not shown. Tell the photographer."],
    offline: ["The gallery cannot be reached right now", "Check your connection and try again."],
    insecure: ["This page must be opened over a secure connection",
      "Your browser only decrypts photos on HTTPS pages. Ask the photographer for an https:// link."],
  };

  function showMessage(kind, values = {}) {
    const [title, text] = MESSAGES[kind] || MESSAGES.damaged;
    document.title = title;
    const card = el("div", { class: "card", role: "alert", "data-state": kind },
      el("h1", { text: title }), el("p", { text: text.replace("{date}", values.date || "") }));
    if (kind === "offline") card.append(el("p", {}, el("button", { class: "primary", text: "Try again",
      onclick: () => location.reload() })));
    app.replaceChildren(card);
  }

  // ---------------------------------------------------------------- opening

  async function open() {
    if (!subtle) return showMessage("insecure");
    const params = new URLSearchParams(location.hash.slice(1));
    const k = params.get("k");
    if (!k) return showMessage("incomplete");
    let secret;
    try { secret = b64urlDecode(k); } catch (error) { return showMessage("badkey"); }
    if (secret.length !== 32) return showMessage("badkey");
    const blob = await fetchBytes(cfg.manifest);
    let lockData, offset;
    try {
      [lockData, offset] = await openBox(await hkdf(secret, "lock"), "L", "m", blob);
    } catch (error) {
      throw new Problem(error instanceof Problem ? error.kind : "badkey");
    }
    const lock = JSON.parse(td.decode(lockData));
    if (!lock.password) return show(await unlock(secret, null, blob, offset));
    askPassword(secret, lock, blob, offset);
  }

  async function unlock(secret, stretched, blob, offset) {
    const shareKey = await hkdf(stretched ? concat(secret, stretched) : secret, "share");
    const [body] = await openBox(await hkdf(shareKey, "manifest"), "M", "m", blob, offset);
    const manifest = JSON.parse(td.decode(body));
    if (manifest.v !== 1 || manifest.sid !== cfg.sid) throw new Problem("damaged");
    return { manifest, shareKey, blobKey: await aes(await hkdf(shareKey, "blob"), "decrypt") };
  }

  function askPassword(secret, lock, blob, offset) {
    const input = el("input", { type: "password", id: "password", name: "password", autocomplete: "current-password",
      required: true, "aria-describedby": "password-error" });
    const error = el("p", { class: "error", id: "password-error", role: "alert" });
    const submit = el("button", { class: "primary", type: "submit", text: "Open" });
    const form = el("form", {}, el("label", { class: "visually-hidden", for: "password", text: "Password" }), input, submit);
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      submit.disabled = true;
      error.textContent = "";
      try {
        show(await unlock(secret, await stretch(input.value, lock), blob, offset));
      } catch (problem) {
        submit.disabled = false;
        input.value = "";
        input.focus();
        error.textContent = "Wrong password. Check it with the photographer and try again.";
      }
    });
    document.title = "Password needed";
    app.replaceChildren(el("div", { class: "card", "data-state": "password" },
      el("h1", { text: "This gallery is protected by a password" }),
      el("p", { class: "muted", text: "The photographer gave it to you with the link. It never leaves this device." }),
      form, error));
    input.focus();
  }

  // ---------------------------------------------------------------- the gallery

  function show(opened) {
    const { manifest } = opened;
    if (manifest.expires && Date.parse(manifest.expires) <= Date.now()) {
      return showMessage("expired", { date: formatDate(manifest.expires) });
    }
    new Gallery(opened).render();
  }

  class Gallery {
    constructor({ manifest, shareKey, blobKey }) {
      this.m = manifest;
      this.images = manifest.images;
      this.shareKey = shareKey;
      this.blobKey = blobKey;
      this.thumbs = new Map();
      this.fulls = new Map();
      this.storeKey = "shutterlock:" + cfg.sid;
      this.state = this.load();
      this.current = -1;
    }

    load() {
      let saved = {};
      try { saved = JSON.parse(localStorage.getItem(this.storeKey) || "{}"); } catch (error) { saved = {}; }
      const ids = new Set(this.images.map((image) => image.id));
      return {
        visitor: typeof saved.visitor === "string" ? saved.visitor : randomName(),
        seq: Number.isInteger(saved.seq) ? saved.seq : 0,
        sent: Number.isInteger(saved.sent) ? saved.sent : 0,
        name: typeof saved.name === "string" ? saved.name : "",
        note: typeof saved.note === "string" ? saved.note : "",
        favourites: Array.isArray(saved.favourites) ? saved.favourites.filter((id) => ids.has(id)) : [],
        comments: Object.fromEntries(Object.entries(saved.comments || {}).filter(([id, text]) =>
          ids.has(id) && typeof text === "string" && text)),
      };
    }
    save() {
      try { localStorage.setItem(this.storeKey, JSON.stringify(this.state)); } catch (error) { /* private mode */ }
    }

    url(object) {
      return object.u || new URL(object.n, location.href).href;
    }
    label(image, index) {
      const parts = [image.name || `Photo ${index + 1}`];
      if (image.date) parts.push(formatDate(image.date));
      return parts.join(", ");
    }

    render() {
      const m = this.m;
      document.title = m.title || "Private gallery";
      const count = this.images.length;
      const facts = [`${count} photo${count === 1 ? "" : "s"}`];
      if (m.expires) facts.push(`available until ${formatDate(m.expires)}`);
      const intro = el("header", { class: "intro" },
        el("h1", { text: m.title || "Private gallery" }),
        m.photographer ? el("p", { class: "by", text: "Photographs by " + m.photographer }) : null,
        m.message ? el("p", { class: "message", text: m.message }) : null,
        el("p", { class: "facts", text: facts.join(" · ") }));
      const nodes = [intro];
      // The host could serve an older manifest it kept; this browser remembers the newest one it saw.
      const seenKey = this.storeKey + ":version";
      const seen = Number.parseInt(localStorage.getItem(seenKey) || "0", 10);
      if (m.version < seen) {
        nodes.push(el("p", { class: "notice", role: "alert", text: "This is an older version of the gallery than " +
          "the one this browser showed before. The storage may be serving an outdated copy; tell the photographer." }));
      } else {
        try { localStorage.setItem(seenKey, String(m.version)); } catch (error) { /* private mode */ }
      }
      if (this.images.some((image) => !image.cloaked)) {
        nodes.push(el("p", { class: "notice", role: "note", text: "Some photos here are not cloaked: the " +
          "photographer chose to share them without the protection against AI image models. They are marked." }));
      }
      this.grid = el("ul", { class: "grid", "aria-label": "Photos" });
      this.images.forEach((image, index) => this.grid.append(this.tile(image, index)));
      nodes.push(this.grid);
      nodes.push(el("footer", { class: "rights" },
        m.rights ? el("p", { text: m.rights }) : null,
        el("p", { text: m.constraints || "No use of these photos for training AI models is permitted." }),
        el("p", { text: "End-to-end encrypted: the storage that serves this page cannot see the photos, their " +
          "names" + (m.feedback ? " or your comments" : "") + "." })));
      if (m.feedback) nodes.push(this.bar());
      app.replaceChildren(...nodes);
      app.setAttribute("data-state", "gallery");
      this.lightbox = this.buildLightbox();
      document.body.append(this.lightbox);
      window.addEventListener("popstate", () => this.fromHash());
      this.loadThumbs();
      this.fromHash();
    }

    tile(image, index) {
      const ratio = image.w / image.h;
      const li = el("li", { "data-id": image.id });
      li.style.flexGrow = String(ratio * 100);
      li.style.flexBasis = `calc(var(--row) * ${ratio})`;
      li.style.maxWidth = `calc(var(--row) * ${ratio * 1.7})`;
      const spacer = el("span", { class: "ratio" });
      spacer.style.paddingBottom = `${(image.h / image.w) * 100}%`;
      const img = el("img", { alt: this.label(image, index), width: image.tw, height: image.th, decoding: "async" });
      const button = el("button", { class: "tile", type: "button", "aria-label": "Open " + this.label(image, index),
        onclick: () => this.openPhoto(index) }, img);
      li.append(spacer, button);
      if (!image.cloaked) li.append(el("span", { class: "badge", text: "not cloaked" }));
      if (this.m.feedback) {
        const heart = el("button", { class: "heart", type: "button", "aria-pressed": String(this.isFav(image.id)),
          "aria-label": "Favourite " + (image.name || `photo ${index + 1}`),
          onclick: () => this.toggleFav(image.id) }, icon("heart"));
        li.append(heart);
      }
      return li;
    }

    async loadThumbs() {
      let next = 0;
      const worker = async () => {
        while (next < this.images.length) {
          const index = next++;
          const image = this.images[index];
          try {
            const data = await this.decryptWith(image.t);
            const url = URL.createObjectURL(new Blob([data], { type: "image/jpeg" }));
            this.thumbs.set(image.id, url);
            const img = this.grid.children[index].querySelector("img");
            img.src = url;
            img.decode().catch(() => {}).finally(() => img.classList.add("loaded"));
          } catch (problem) {
            this.grid.children[index].classList.add("failed");
          }
        }
      };
      await Promise.all(Array.from({ length: 6 }, worker));
      if (this.grid.querySelector("li.failed")) {
        app.insertBefore(el("p", { class: "notice", role: "alert", text: "Some photos could not be loaded or " +
          "did not pass the integrity check, so they are not shown." }), this.grid);
      }
    }

    async decryptWith(object) {
      const blob = await fetchBytes(this.url(object));
      const head = blob.subarray(0, BOX_HEADER);
      if (td.decode(head.subarray(0, 4)) !== "SLS1" || head[4] !== 66) throw new Problem("damaged");
      const length = new DataView(head.buffer, head.byteOffset + 17, 4).getUint32(0);
      const ad = concat(te.encode("SLS1B"), te.encode(cfg.sid + "/" + object.n));
      const plain = new Uint8Array(await subtle.decrypt({ name: "AES-GCM", iv: head.subarray(5, 17),
        additionalData: ad }, this.blobKey, blob.subarray(BOX_HEADER, BOX_HEADER + length)));
      const size = new DataView(plain.buffer).getUint32(0);
      return plain.subarray(4, 4 + size);
    }

    // ------------------------------------------------------------ favourites and comments

    isFav(id) { return this.state.favourites.includes(id); }
    toggleFav(id) {
      const favs = this.state.favourites;
      if (this.isFav(id)) favs.splice(favs.indexOf(id), 1); else favs.push(id);
      this.changed();
    }
    changed() {
      this.state.seq += 1;
      this.save();
      for (const li of this.grid.children) {
        const heart = li.querySelector(".heart");
        if (heart) heart.setAttribute("aria-pressed", String(this.isFav(li.dataset.id)));
      }
      if (this.current >= 0) this.updateLightbox();
      this.updateBar();
    }

    bar() {
      this.counts = el("span", { class: "counts", "aria-live": "polite" });
      this.sendButton = el("button", { class: "primary", type: "button", text: "Send selection",
        "aria-label": "Send your favourites and comments to the photographer", onclick: () => this.openSend() });
      const bar = el("div", { class: "bar", role: "region", "aria-label": "Your selection" }, this.counts, this.sendButton);
      this.updateBar();
      return bar;
    }
    updateBar() {
      if (!this.counts) return;
      const favs = this.state.favourites.length;
      const notes = Object.keys(this.state.comments).length;
      const parts = [`${favs} favourite${favs === 1 ? "" : "s"}`, `${notes} comment${notes === 1 ? "" : "s"}`];
      const pending = this.state.seq > this.state.sent;
      this.counts.textContent = parts.join(" · ") + (this.state.sent && !pending ? " · sent" : "");
      this.sendButton.textContent = this.state.sent ? "Send changes" : "Send selection";
      this.sendButton.disabled = !pending;
    }

    openSend() {
      const favs = this.state.favourites.length;
      const notes = Object.keys(this.state.comments).length;
      const name = el("input", { id: "send-name", autocomplete: "name", maxlength: "120", value: this.state.name });
      const note = el("textarea", { id: "send-note", rows: "3", maxlength: "4000" });
      note.value = this.state.note;
      const status = el("p", { role: "status", class: "muted" });
      const send = el("button", { class: "primary", type: "submit", text: "Send" });
      const dialog = el("dialog", { class: "send", "aria-labelledby": "send-title" });
      const form = el("form", {},
        el("h2", { id: "send-title", text: "Send your selection" }),
        el("p", { class: "muted", text: `${favs} favourite${favs === 1 ? "" : "s"} and ${notes} comment${notes === 1 ? "" : "s"}. ` +
          "Encrypted on this device so that only the photographer can read it. You can send changes later." }),
        el("label", { for: "send-name", text: "Your name (optional)" }), name,
        el("label", { for: "send-note", text: "A note for the photographer (optional)" }), note,
        status,
        el("div", { class: "row" }, el("button", { class: "secondary", type: "button", text: "Close",
          onclick: () => dialog.close() }), send));
      form.addEventListener("submit", async (event) => {
        event.preventDefault();
        this.state.name = name.value.trim();
        this.state.note = note.value.trim();
        send.disabled = true;
        status.textContent = "Encrypting and sending…";
        try {
          await this.submit();
          status.textContent = "Sent. The photographer will see your selection.";
          setTimeout(() => dialog.close(), 1200);
        } catch (problem) {
          status.textContent = problem.message || "Could not send. Try again in a moment.";
          send.disabled = false;
        }
      });
      dialog.append(form);
      dialog.addEventListener("close", () => dialog.remove());
      document.body.append(dialog);
      dialog.showModal();
    }

    async submit() {
      const fb = this.m.feedback;
      this.state.seq += 1;
      const seq = this.state.seq;
      const message = te.encode(JSON.stringify({ v: 1, visitor: this.state.visitor, seq, sent: new Date().toISOString(),
        name: this.state.name, favourites: this.state.favourites, comments: this.state.comments, note: this.state.note }));
      const recipientRaw = b64urlDecode(fb.key);
      const recipient = await subtle.importKey("raw", recipientRaw, { name: "ECDH", namedCurve: "P-256" }, false, []);
      const ephemeral = await subtle.generateKey({ name: "ECDH", namedCurve: "P-256" }, true, ["deriveBits"]);
      const shared = new Uint8Array(await subtle.deriveBits({ name: "ECDH", public: recipient }, ephemeral.privateKey, 256));
      const ephemeralRaw = new Uint8Array(await subtle.exportKey("raw", ephemeral.publicKey));
      const auth = await hkdf(this.shareKey, "feedback-auth");
      const ikm = await subtle.importKey("raw", concat(shared, auth), "HKDF", false, ["deriveBits"]);
      const raw = new Uint8Array(await subtle.deriveBits({ name: "HKDF", hash: "SHA-256",
        salt: concat(ephemeralRaw, recipientRaw), info: te.encode(LABEL + "feedback") }, ikm, 256));
      const nonce = crypto.getRandomValues(new Uint8Array(12));
      const sealed = new Uint8Array(await subtle.encrypt({ name: "AES-GCM", iv: nonce,
        additionalData: te.encode("SLF1" + cfg.sid) }, await aes(raw, "encrypt"), frame(message, 1024)));
      const body = concat(te.encode("SLF1"), ephemeralRaw, nonce, sealed);
      if (body.length > fb.max) throw new Error("Your comments are too long to send; please shorten them.");
      const form = new FormData();
      for (const [key, value] of Object.entries(fb.post.fields)) form.append(key, value);
      form.append("key", fb.prefix + randomName());
      form.append("file", new Blob([body], { type: "application/octet-stream" }));
      let response;
      try {
        response = await fetch(fb.post.url, { method: "POST", body: form, credentials: "omit", referrerPolicy: "no-referrer" });
      } catch (error) {
        throw new Error("Could not reach the gallery's storage. Check your connection and try again.");
      }
      if (response.status === 403) throw new Error("This gallery no longer accepts selections.");
      if (!response.ok) throw new Error("Sending failed (HTTP " + response.status + "). Try again in a moment.");
      this.state.sent = seq;
      this.save();
      this.updateBar();
    }

    // ------------------------------------------------------------ the lightbox

    buildLightbox() {
      this.where = el("div", { class: "where" });
      this.fullImg = el("img", { alt: "" });
      this.favButton = el("button", { class: "icon", type: "button", "aria-label": "Favourite",
        onclick: () => this.toggleFav(this.images[this.current].id) }, icon("heart"));
      this.downloadLink = el("a", { class: "icon", "aria-label": "Download this photo" }, icon("download"));
      const close = el("button", { class: "icon", type: "button", "aria-label": "Close (Esc)",
        onclick: () => history.back() }, icon("close"));
      const top = el("div", { class: "lb-top" }, this.where,
        this.m.feedback ? this.favButton : null, this.m.download ? this.downloadLink : null, close);
      const stage = el("div", { class: "stage" }, this.fullImg,
        el("button", { class: "nav prev", type: "button", "aria-label": "Previous photo",
          onclick: () => this.step(-1) }, icon("prev")),
        el("button", { class: "nav next", type: "button", "aria-label": "Next photo",
          onclick: () => this.step(1) }, icon("next")));
      let startX = null;
      stage.addEventListener("pointerdown", (event) => { startX = event.clientX; });
      stage.addEventListener("pointerup", (event) => {
        if (startX !== null && Math.abs(event.clientX - startX) > 50) this.step(event.clientX < startX ? 1 : -1);
        startX = null;
      });
      const box = el("div", { class: "lightbox", role: "dialog", "aria-modal": "true", "aria-label": "Photo viewer",
        hidden: true }, top, stage);
      if (this.m.feedback) {
        this.comment = el("textarea", { id: "comment", rows: "1", maxlength: "2000",
          placeholder: "Comment for the photographer" });
        this.comment.addEventListener("change", () => {
          const id = this.images[this.current].id;
          const text = this.comment.value.trim();
          if (text) this.state.comments[id] = text; else delete this.state.comments[id];
          this.changed();
        });
        box.append(el("div", { class: "lb-bottom" }, el("div", { class: "note-wrap" },
          el("label", { for: "comment", class: "visually-hidden", text: "Comment on this photo" }), this.comment)));
      }
      box.addEventListener("keydown", (event) => this.onKey(event));
      return box;
    }

    onKey(event) {
      if (event.target === this.comment) {
        if (event.key === "Escape") this.comment.blur();
        return;
      }
      const keys = { ArrowLeft: () => this.step(-1), ArrowRight: () => this.step(1), Escape: () => history.back(),
        Home: () => this.show(0), End: () => this.show(this.images.length - 1),
        f: () => this.m.feedback && this.toggleFav(this.images[this.current].id) };
      if (keys[event.key]) { event.preventDefault(); keys[event.key](); return; }
      if (event.key === "Tab") {
        const focusable = [...this.lightbox.querySelectorAll("button, a[href], textarea")].filter((n) => n.offsetParent);
        const first = focusable[0], last = focusable[focusable.length - 1];
        if (event.shiftKey && document.activeElement === first) { event.preventDefault(); last.focus(); }
        else if (!event.shiftKey && document.activeElement === last) { event.preventDefault(); first.focus(); }
      }
    }

    openPhoto(index) {
      const params = new URLSearchParams(location.hash.slice(1));
      params.set("p", String(index + 1));
      history.pushState({ photo: index }, "", "#" + params.toString());
      this.fromHash();
    }
    fromHash() {
      const params = new URLSearchParams(location.hash.slice(1));
      const p = Number.parseInt(params.get("p") || "", 10);
      if (p >= 1 && p <= this.images.length) {
        this.opener = this.opener || document.activeElement;
        this.lightbox.hidden = false;
        document.body.style.overflow = "hidden";
        this.show(p - 1, false);
      } else if (!this.lightbox.hidden) {
        this.lightbox.hidden = true;
        document.body.style.overflow = "";
        const tile = this.grid.children[this.current] && this.grid.children[this.current].querySelector(".tile");
        this.current = -1;
        (tile || this.opener || document.body).focus();
        this.opener = null;
      }
    }
    step(delta) {
      const count = this.images.length;
      this.show((this.current + delta + count) % count);
    }
    show(index, updateHash = true) {
      if (updateHash) {
        const params = new URLSearchParams(location.hash.slice(1));
        params.set("p", String(index + 1));
        history.replaceState({ photo: index }, "", "#" + params.toString());
      }
      const first = this.current < 0;
      this.current = index;
      this.updateLightbox();
      this.loadFull(index);
      this.loadFull((index + 1) % this.images.length);
      if (first) this.lightbox.querySelector(".nav.next, .icon").focus();
    }
    updateLightbox() {
      const image = this.images[this.current];
      const label = this.label(image, this.current);
      this.where.replaceChildren(el("strong", { text: image.name || `Photo ${this.current + 1}` }),
        el("span", { text: `${this.current + 1} of ${this.images.length}` + (image.date ? " · " + formatDate(image.date) : "") +
          (image.cloaked ? "" : " · not cloaked") }));
      this.fullImg.alt = label;
      const url = this.fulls.get(image.id) || this.thumbs.get(image.id);
      if (url && this.fullImg.getAttribute("src") !== url) this.fullImg.src = url;
      this.favButton.setAttribute("aria-pressed", String(this.isFav(image.id)));
      this.favButton.setAttribute("aria-label", (this.isFav(image.id) ? "Remove from favourites: " : "Favourite: ") + label);
      if (this.comment) this.comment.value = this.state.comments[image.id] || "";
      if (this.m.download && this.fulls.get(image.id)) {
        this.downloadLink.href = this.fulls.get(image.id);
        this.downloadLink.download = image.name || `photo-${this.current + 1}.jpg`;
      } else {
        this.downloadLink.removeAttribute("href");
      }
    }
    async loadFull(index) {
      const image = this.images[index];
      if (this.fulls.has(image.id)) return;
      this.fulls.set(image.id, null);
      try {
        const data = await this.decryptWith(image.f);
        this.fulls.set(image.id, URL.createObjectURL(new Blob([data], { type: "image/jpeg" })));
        if (this.current === index) this.updateLightbox();
      } catch (problem) {
        this.fulls.delete(image.id);
      }
    }
  }

  // A corrected link pasted over this one differs only after the #, which browsers do not reload for.
  const openedWith = new URLSearchParams(location.hash.slice(1)).get("k");
  window.addEventListener("hashchange", () => {
    if (new URLSearchParams(location.hash.slice(1)).get("k") !== openedWith) location.reload();
  });
  open().catch((problem) => showMessage(problem instanceof Problem ? problem.kind : "damaged"));
})();
