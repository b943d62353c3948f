/*! Throughline form snippet: remembers where a visitor came from and posts forms with it. Apache-2.0.
 * Docs: web/README.md. Plain ES2017, no dependencies, no build step. */
(() => {
  'use strict';
  if (window.Throughline && window.Throughline.version) return; // included twice: the first copy already listens

  const P = 'throughline:';
  const UTM = ['utm_source', 'utm_medium', 'utm_campaign', 'utm_content', 'utm_term'];
  const TAGS = UTM.concat(['gclid', 'gbraid', 'wbraid', 'yclid', 'ysclid', 'fbclid']);
  const SESSION = 30 * 6e4;
  const LIFETIME = 180 * 864e5;
  const QUEUE_DAYS = 30 * 864e5;
  const MAX = 2000; // the endpoint refuses longer values
  // The endpoint names a bad phone or e-mail by its contract name, whatever the input was called.
  const ALIASES = { phone: ['tel', 'telephone', 'phone_number', 'mobile'], email: ['e-mail', 'mail'] };
  const script = document.currentScript;
  const cfg = { endpoint: script && script.getAttribute('data-endpoint'), honeypot: '_gotcha', attempts: 3 };
  const attached = new WeakMap();
  const busy = new WeakSet();
  let state = { first: null, current: null };

  const warn = (error) => { try { console.warn('[throughline]', error); } catch (e) { /* no console */ } };
  // Private mode or blocked storage: every read is null and every write false; the page then sends what it knows.
  const store = (() => { try { localStorage.setItem(P + 'probe', '1'); localStorage.removeItem(P + 'probe'); return localStorage; } catch (e) { return null; } })();
  const load = (key) => { try { return JSON.parse(store.getItem(P + key)); } catch (e) { return null; } };
  const save = (key, value) => { try { store.setItem(P + key, JSON.stringify(value)); return true; } catch (e) { return false; } };
  const clip = (value) => String(value).slice(0, MAX);
  const webUrl = (value) => { try { const url = new URL(value); return /^https?:$/.test(url.protocol) ? url : null; } catch (e) { return null; } };
  const bare = (host) => host.replace(/^www\./, '');
  const emit = (target, name, detail) => target.dispatchEvent(new CustomEvent('throughline:' + name, { bubbles: true, detail }));
  const cookie = (name) => {
    try { const m = document.cookie.match(new RegExp('(?:^|; *)' + name + '=([^;]+)')); return m ? clip(decodeURIComponent(m[1])) : ''; } catch (e) { return ''; }
  };
  const fresh = (item, now) => (item && item.expires > now && item.touch) || null;

  // What this page load knows: raw tags, an external referrer, the landing URL. The server classifies them.
  function pageTouch(now) {
    const touch = {};
    const params = new URLSearchParams(location.search);
    TAGS.forEach((name) => { const value = (params.get(name) || '').trim(); if (value) touch[name] = clip(value); });
    const tagged = Object.keys(touch).length > 0;
    const ref = webUrl(document.referrer); // android-app:// and the like would fail the endpoint's URL check
    const external = ref && bare(ref.hostname) !== bare(location.hostname) ? clip(ref.href) : '';
    if (external) touch.referrer = external;
    if (webUrl(location.href)) touch.landing_url = clip(location.href);
    touch.seen_at = new Date(now).toISOString();
    return { touch, kind: tagged ? 'tagged' : external ? 'referral' : 'direct' };
  }

  // sourcebuster/GA rules: tags always win; a referrer wins only outside a session; a direct visit never wins.
  // The first touch is written once and kept for its lifetime.
  function track() {
    const now = Date.now();
    const seen = pageTouch(now);
    const session = load('session');
    const inSession = !!(session && session.expires > now);
    save('session', { expires: now + SESSION });
    let current = fresh(load('current'), now);
    if (!current || seen.kind === 'tagged' || (seen.kind === 'referral' && !inSession)) {
      current = seen.touch;
      save('current', { touch: current, expires: now + LIFETIME });
    }
    let first = fresh(load('first'), now);
    if (!first) {
      first = current;
      save('first', { touch: first, expires: now + LIFETIME });
    }
    state = { first: store ? first : null, current };
  }

  // Re-read storage at submit time: another tab may have brought a newer touch.
  function snapshot() {
    const now = Date.now();
    return { first: store ? fresh(load('first'), now) || state.first : null, current: fresh(load('current'), now) || state.current };
  }

  function touchFields() {
    const fields = {};
    const { first, current } = snapshot();
    TAGS.concat(['referrer', 'landing_url']).forEach((name) => { if (current && current[name]) fields[name] = current[name]; });
    if (first) {
      UTM.concat(['referrer', 'landing_url']).forEach((name) => { if (first[name]) fields['first_' + name] = first[name]; });
      fields.first_seen_at = first.seen_at;
    }
    const ym = cookie('_ym_uid');
    const ga = cookie('_ga');
    if (ym) fields.ym_client_id = ym;
    if (ga) fields.ga_client_id = ga;
    return fields;
  }

  function payload(form, submitter) {
    const fields = Object.create(null);
    const add = (name, value) => {
      if (!name || typeof value !== 'string') return; // files cannot travel in JSON (the endpoint refuses them anyway)
      fields[name] = name in fields ? [].concat(fields[name], value) : value;
    };
    new FormData(form).forEach((value, name) => add(name, value));
    if (submitter && submitter.name) add(submitter.name, submitter.value); // FormData(form) leaves out the clicked button
    const next = typeof fields._next === 'string' ? fields._next : '';
    delete fields._next; // the endpoint would answer 303 to the thank-you page, and fetch would follow it
    return withTouch(fields, next);
  }

  function withTouch(fields, next) {
    const added = [];
    const touch = touchFields();
    // The site's own non-empty tag fields win; empty hidden ones are filled in.
    Object.keys(touch).forEach((name) => { if (!fields[name]) { fields[name] = touch[name]; added.push(name); } });
    return { fields, added, next };
  }

  function endpointFor(form, formId) {
    const base = (form && form.getAttribute('data-throughline-endpoint')) || cfg.endpoint;
    if (base) return base.replace(/\/+$/, '') + '/' + encodeURIComponent(formId) + '/submissions';
    const action = form && form.getAttribute('action');
    const url = action ? new URL(action, document.baseURI).href : '';
    return /\/submissions\/?$/.test(url) ? url : '';
  }

  const transient = (code) => code === 0 || code >= 500 || code === 408 || code === 429;
  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  async function post(url, body) {
    try {
      // text/plain keeps the request "simple": no CORS preflight. keepalive lets it finish if the visitor leaves.
      const response = await fetch(url, {
        method: 'POST', body, headers: { 'Content-Type': 'text/plain;charset=UTF-8' },
        keepalive: body.length < 2e4, credentials: 'omit', cache: 'no-store',
      });
      const data = await response.json().catch(() => ({}));
      return { code: response.status, data: data || {}, wait: Number(response.headers.get('Retry-After')) || 0 };
    } catch (e) {
      return { code: 0, data: {}, wait: 0 }; // offline, refused, or CORS hid the answer
    }
  }

  async function deliver(url, p, attempts) {
    for (let attempt = 1; ; attempt++) {
      const result = await post(url, JSON.stringify(p.fields));
      const bad = Object.keys(result.data.fields || {});
      if (result.code >= 400 && result.code < 500 && bad.length && bad.every((name) => (p.added || []).indexOf(name) >= 0)) {
        // Only fields we added were refused: a lead matters more than its tags, so send it without them.
        bad.forEach((name) => { delete p.fields[name]; });
        p.added = [];
        return deliver(url, p, attempts);
      }
      if (!transient(result.code) || attempt >= attempts) return result;
      await sleep(Math.min(result.wait, 10) * 1000 || 1000 * Math.pow(3, attempt - 1) * (0.8 + Math.random() * 0.4));
    }
  }

  // Kept until it is delivered (or refused, or a month old); resent on the next page load.
  function enqueue(url, formId, p) {
    const body = JSON.stringify(p.fields);
    const queue = (Array.isArray(load('queue')) ? load('queue') : []).filter((item) => JSON.stringify(item.fields) !== body);
    queue.push({ id: Date.now().toString(36) + Math.random().toString(36).slice(2), url, form_id: formId, fields: p.fields, added: p.added, at: Date.now() });
    return !!store && save('queue', queue.slice(-20));
  }

  function updateQueued(id, change) {
    const queue = Array.isArray(load('queue')) ? load('queue') : [];
    save('queue', queue.map((item) => (item.id === id ? change(item) : item)).filter(Boolean));
  }

  let flushing = false;
  async function flush() {
    if (flushing || !store) return;
    flushing = true;
    try {
      for (const item of Array.isArray(load('queue')) ? load('queue') : []) {
        if (item.lock > Date.now()) continue; // another tab is sending it right now
        updateQueued(item.id, (it) => Object.assign(it, { lock: Date.now() + 3e4 }));
        const result = await deliver(item.url, item, 1); // one try per page load; the next load tries again
        const stale = Date.now() - item.at > QUEUE_DAYS;
        updateQueued(item.id, (it) => (transient(result.code) && !stale ? Object.assign(it, { lock: 0 }) : null));
        const detail = { form_id: item.form_id, submission_id: result.data.submission_id, resent: true };
        if (!transient(result.code)) emit(document, result.code < 300 ? 'sent' : 'invalid', Object.assign(detail, result.data));
      }
    } catch (error) {
      warn(error);
    } finally {
      flushing = false;
    }
  }

  const show = (el, visible) => { if (el) el.hidden = !visible; };
  const setState = (form, name) => {
    ['sending', 'sent', 'invalid', 'queued'].forEach((s) => form.classList.toggle('throughline-' + s, s === name));
  };
  const named = (form, name) => Array.prototype.filter.call(form.querySelectorAll('[name]'), (el) => el.getAttribute('name').toLowerCase() === name);

  function clearErrors(form) {
    form.querySelectorAll('[data-throughline-error]').forEach((el) => { el.removeAttribute('aria-invalid'); el.removeAttribute('data-throughline-error'); });
    const box = form.querySelector('[data-throughline-errors]');
    if (box) box.textContent = '';
    show(box, false);
    show(form.querySelector('[data-throughline-success]'), false);
    show(form.querySelector('[data-throughline-queued]'), false);
  }

  function markInvalid(form, result) {
    const fields = result.data.fields || {};
    const byReason = new Map();
    Object.keys(fields).forEach((name) => {
      const reason = String(fields[name]);
      const key = name.toLowerCase();
      const inputs = [key].concat(ALIASES[key] || []).map((n) => named(form, n)).find((list) => list.length) || [];
      inputs.forEach((el) => { el.setAttribute('aria-invalid', 'true'); el.setAttribute('data-throughline-error', reason); });
      const label = inputs[0] && inputs[0].labels && inputs[0].labels[0] ? inputs[0].labels[0].textContent.trim() : name;
      byReason.set(reason, (byReason.get(reason) || []).concat(label));
    });
    const box = form.querySelector('[data-throughline-errors]');
    if (box) {
      const lines = byReason.size ? Array.from(byReason, ([reason, labels]) => labels.join(', ') + ': ' + reason) : [result.data.error || 'HTTP ' + result.code];
      lines.forEach((text) => { const p = document.createElement('p'); p.textContent = text; box.appendChild(p); });
      show(box, true);
    }
    const first = form.querySelector('[aria-invalid="true"]');
    if (first) first.focus();
  }

  async function submitForm(form, formId, url, p) {
    busy.add(form);
    const buttons = Array.prototype.filter.call(form.querySelectorAll('button, input[type=submit], input[type=image]'),
      (b) => (b.type === 'submit' || b.type === 'image') && !b.disabled);
    buttons.forEach((b) => { b.disabled = true; });
    form.setAttribute('aria-busy', 'true');
    clearErrors(form);
    setState(form, 'sending');
    try {
      const result = await deliver(url, p, cfg.attempts);
      if (result.code >= 200 && result.code < 300) {
        HTMLFormElement.prototype.reset.call(form); // an input named "reset" would shadow form.reset
        setState(form, 'sent');
        const success = form.querySelector('[data-throughline-success]');
        show(success, true);
        emit(form, 'sent', { form_id: formId, submission_id: result.data.submission_id });
        if (!success && webUrl(p.next)) location.assign(p.next); // no message to show: go where the plain form would
      } else if (transient(result.code)) {
        const stored = enqueue(url, formId, p);
        setState(form, 'queued');
        if (stored) show(form.querySelector('[data-throughline-queued]'), true);
        emit(form, stored ? 'queued' : 'failed', { form_id: formId, status: result.code });
      } else {
        setState(form, 'invalid');
        markInvalid(form, result);
        emit(form, 'invalid', { form_id: formId, status: result.code, error: result.data.error, fields: result.data.fields || {} });
      }
    } catch (error) {
      warn(error);
    } finally {
      buttons.forEach((b) => { b.disabled = false; });
      form.removeAttribute('aria-busy');
      busy.delete(form);
    }
  }

  function onSubmit(event) {
    try {
      const form = event.target;
      if (!(form instanceof HTMLFormElement) || event.defaultPrevented) return; // the site's own code stopped it
      const formId = attached.get(form) || form.getAttribute('data-throughline-form');
      if (!formId) return;
      if (busy.has(form)) return event.preventDefault(); // a second click while the first post is on its way
      const url = endpointFor(form, formId);
      if (!url) return; // nowhere to send it: the browser posts the form as plain HTML
      const p = payload(form, event.submitter);
      event.preventDefault();
      submitForm(form, formId, url, p);
    } catch (error) {
      warn(error); // before preventDefault, the browser still posts the form natively
    }
  }

  function addHoneypot(form) {
    if (named(form, cfg.honeypot.toLowerCase()).length) return;
    const input = document.createElement('input');
    input.type = 'text';
    input.name = cfg.honeypot;
    input.tabIndex = -1;
    input.setAttribute('autocomplete', 'off');
    input.setAttribute('aria-hidden', 'true');
    // Off-screen rather than display:none, which bots skip.
    input.style.cssText = 'position:absolute!important;left:-10000px!important;width:1px;height:1px;opacity:0';
    form.appendChild(input);
  }

  const guard = (fn, fallback) => function () { try { return fn.apply(this, arguments); } catch (error) { warn(error); return fallback; } };

  window.Throughline = {
    version: '1.0.0',
    init: guard((options) => { Object.assign(cfg, options || {}); return window.Throughline; }),
    attach: guard((form, formId) => { attached.set(form, String(formId)); addHoneypot(form); }),
    track: guard(track), // call after a single-page app changes its address
    touch: guard(() => JSON.parse(JSON.stringify(snapshot())), {}),
    fields: guard(touchFields, {}),
    flush: () => flush().catch(warn),
  };

  try { track(); } catch (error) { warn(error); }
  document.addEventListener('submit', onSubmit);
  document.addEventListener('input', (event) => {
    const el = event.target; // typing into a field the server refused clears its mark
    if (el && el.hasAttribute && el.hasAttribute('data-throughline-error')) {
      el.removeAttribute('aria-invalid');
      el.removeAttribute('data-throughline-error');
    }
  });
  const ready = () => {
    try { document.querySelectorAll('form[data-throughline-form]').forEach(addHoneypot); } catch (error) { warn(error); }
    window.Throughline.flush();
  };
  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', ready); else ready();
  window.addEventListener('online', window.Throughline.flush);
})();
