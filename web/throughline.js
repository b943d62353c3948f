/*! Throughline (Apache-2.0): web/README.md */
// Remembers where a visitor came from and posts forms with it. Plain ES2017, no dependencies, no build step.
(() => {
  'use strict';
  if (window.Throughline && window.Throughline.version) return; // included twice: the first copy already listens

  const P = 'throughline:';
  const C = '_tl_'; // cookie names: _tl_first, _tl_current, _tl_session
  const TAGS = ['utm_source', 'utm_medium', 'utm_campaign', 'utm_content', 'utm_term', 'gclid', 'gbraid', 'wbraid', 'yclid', 'ysclid', 'fbclid', 'rb_clickid'];
  const SENT = [...TAGS, 'referrer', 'landing_url'];
  const SESSION = 30 * 6e4;
  const LIFETIME = 180 * 864e5;
  const QUEUE_DAYS = 30 * 864e5;
  const MAX = 2000; // the endpoint keeps at most this many characters of a value
  // Search engines' own hosts (not their login, payment or service subdomains) and their Android apps: a visit from
  // them overrides the current touch even inside a session. The server keeps the full host list (sources.py).
  const SEARCH = /^(((www|m)\.)?((yandex|google)\.[a-z]{2,3}(\.[a-z]{2})?|ya\.ru|bing\.com|duckduckgo\.com)|(go|search)\.mail\.ru|nova\.rambler\.ru|search\.yahoo\.com|com\.google\.android\.googlequicksearchbox|ru\.yandex\.searchplugin|com\.yandex\.browser)$/;
  // Payment, 3-D Secure and login hosts: coming back from them is no new visit. The same list as IGNORED_REFERRERS
  // in sources.py (a test checks that they agree).
  const IGNORE = /(^|\.)((yoomoney|yookassa|cloudpayments|paymaster|payanyway|paykeeper|unitpay)\.ru|robokassa\.(ru|com)|qiwi\.com|((money|pay|id|passport|oauth)\.yandex|securepayments\.sber(bank)?|id\.sber|(securepay|pay|id)\.t(inkoff|bank)|pay\.alfabank|esia\.gosuslugi)\.ru|(oauth|passport)\.yandex\.com|(accounts|pay)\.google\.com|(id|oauth|login)\.vk\.(com|ru))$|^(3ds(ecure)?|acs)(\d*|-[\w-]*)\.[^.]+\.[^.]/;
  // The endpoint names a bad phone or e-mail by its contract name, whatever the input was called.
  const ALIASES = { phone: ['tel', 'telephone', 'phone_number', 'mobile'], email: ['e-mail', 'mail'] };
  const script = document.currentScript;
  const attr = (name) => (script && script.getAttribute('data-' + name)) || '';
  const cfg = {
    endpoint: attr('endpoint'), honeypot: '_gotcha', attempts: 3, cookieDomain: attr('cookie-domain').toLowerCase().replace(/^\./, ''),
    ignoreReferrers: attr('ignore-referrers').toLowerCase().match(/[^\s,.][^\s,]*/g) || [], // Pay.Bank.ru, .bank.ru
    requireConsent: script && script.hasAttribute('data-require-consent'),
    counter: attr('metrica-counter'), // Yandex Metrica's counter id: its ClientID comes from ym(), not the cookie
  };
  const attached = new WeakMap();
  const busy = new WeakSet();
  let state = { first: null, current: null };
  let consented = false;
  let referred; // this page's referrer is counted once: a single-page app's later track() calls are navigation
  let ls; // localStorage once it is allowed; null when touching it throws (blocked storage). Every use is in a try.
  let domain; // the cookie domain: the registrable domain unless cookieDomain is set; '' = this host only
  let ymId; // Metrica's ClientID as ym() answered it

  const warn = (error) => console.warn(error);
  const granted = () => !cfg.requireConsent || consented;
  // Clip by code point, never inside a surrogate pair (the endpoint counts code points too).
  const clip = (value) => Array.from(String(value)).slice(0, MAX).join('');
  const parse = (value) => { try { return new URL(value); } catch (e) { return null; } };
  const webUrl = (value) => { const url = parse(value); return url && /^https?:$/.test(url.protocol) ? url : null; };
  const bare = (host) => host.replace(/^www\./, '');
  const within = (host, list) => list.some((d) => ('.' + host).endsWith('.' + d));
  const emit = (target, name, detail) => target.dispatchEvent(new CustomEvent(P + name, { bubbles: true, detail }));
  const readCookie = (name) => {
    // '' when there is none, or when another script wrote it with malformed percent-encoding
    try { return decodeURIComponent(document.cookie.match(new RegExp('(?:^|; *)' + name + '=([^;]*)'))[1]); } catch (e) { return ''; }
  };
  const setCookie = (name, value, expires, where) => {
    // max-age, not expires: a visitor's wrong clock must not delete the cookie at once (the value has its own expiry).
    document.cookie = name + '=' + value + ';path=/;samesite=lax;max-age=' + ((expires - Date.now()) / 1e3 | 0) +
      (where ? ';domain=' + where : '') + (location.protocol === 'https:' ? ';secure' : '');
  };

  // Nothing is read or written before consent, when the site asks for it (force: to forget it all).
  function open(force) {
    if (ls !== undefined || !(force || granted())) return;
    try { ls = localStorage; } catch (e) { ls = null; }
    domain = cfg.cookieDomain;
    const parts = location.hostname.split('.');
    // As Google Analytics' "auto": the shortest parent domain that takes a cookie (browsers refuse public suffixes),
    // but never a site builder's shared domain, which the public suffix list lacks (mysite.tilda.ws is the site).
    for (let i = parts.length - 2; !domain && i >= 0 && !/^[\d.]+$|:/.test(location.hostname); i--) {
      const d = parts.slice(i).join('.');
      if (/^(tilda\.ws|bitrix24\.site|(nethouse|ucoz|narod)\.ru)$/.test(d)) continue;
      try {
        setCookie(C + 'probe', 1, Date.now() + 9e3, d);
        if (readCookie(C + 'probe')) { domain = d; setCookie(C + 'probe', 1, 0, d); }
      } catch (e) { /* cookies blocked */ }
    }
  }

  // The cookie (shared by every subdomain) wins; localStorage (this origin only) when there is no cookie, and for the
  // whole touch when the cookie had to leave its landing page out.
  function load(key) {
    if (!granted()) return null;
    open();
    let cookie, local;
    try { cookie = JSON.parse(readCookie(C + key)); } catch (e) { /* none, or unreadable */ }
    try { local = JSON.parse(ls.getItem(P + key)); } catch (e) { /* none, or blocked */ }
    if (!cookie) return local || null;
    const same = local && local.touch && cookie.touch && local.touch.seen_at === cookie.touch.seen_at;
    return same ? Object.assign(cookie, { touch: local.touch }) : cookie;
  }

  function save(key, value) {
    if (!granted()) return;
    open();
    const json = JSON.stringify(value);
    try { ls.setItem(P + key, json); } catch (e) { /* blocked or full */ }
    if (key === 'queue') return; // unsent forms hold contact details: never in a cookie that travels with requests
    // Cookies travel with every request, and a long Cookie header makes some servers refuse the site's pages: a touch
    // over 2 KB leaves its landing page out of the cookie, and one still longer lives in localStorage only.
    let text = encodeURIComponent(json);
    if (text.length > MAX) text = encodeURIComponent(JSON.stringify(value, (name, v) => (name === 'landing_url' ? undefined : v)));
    try { setCookie(C + key, text, text.length > MAX ? 0 : value.expires, domain); } catch (e) { /* cookies blocked */ }
  }

  function forget() {
    state.first = null;
    open(1); // withdrawn on a page where consent was never given: find the cookie domain and storage all the same
    ['first', 'current', 'session'].forEach((key) => {
      try { setCookie(C + key, '', 0, domain); ls.removeItem(P + key); } catch (e) { /* nothing stored */ }
    });
  }

  // Origin, path, and the tags; never other parameters (tokens, e-mails) and never the fragment.
  function cleanUrl(url) {
    const kept = new URLSearchParams();
    new URLSearchParams(url.search).forEach((value, name) => { if (TAGS.includes(name)) kept.append(name, value); });
    return clip(url.origin + url.pathname + (String(kept) ? '?' + kept : ''));
  }

  // What this page load knows: raw tags, an outside referrer, the landing page. The server classifies them.
  // kind: 2 = tags or a search engine (always wins), 1 = another site (wins outside a session), 0 = direct.
  function pageTouch(now) {
    const touch = {};
    const params = new URLSearchParams(location.search);
    TAGS.forEach((name) => { const value = (params.get(name) || '').trim(); if (value) touch[name] = clip(value); });
    let kind = Object.keys(touch).length ? 2 : 0;
    const ref = !referred && parse(document.referrer);
    const host = ref ? ref.hostname.toLowerCase() : '';
    const web = webUrl(ref);
    const own = within(host, [domain || cfg.cookieDomain || location.hostname]) || bare(host) === bare(location.hostname);
    if (host && (web || ref.protocol === 'android-app:') && !own && !IGNORE.test(host) && !within(host, cfg.ignoreReferrers)) {
      touch.referrer = web ? cleanUrl(ref) : 'android-app://' + host + '/'; // the app's package, as Android sends it
      kind = kind || (SEARCH.test(host) ? 2 : 1);
    }
    const here = webUrl(location);
    if (here) touch.landing_url = cleanUrl(here);
    touch.seen_at = new Date(now).toISOString();
    // A reload, or back and forward, is no new arrival: a tab restored days later must not bring its old ad back.
    return { touch, kind: (performance.navigation || {}).type ? 0 : kind };
  }

  // sourcebuster/GA rules: tags and search engines always win; another site wins only outside a session; a direct
  // visit never wins. Each page view renews the current touch's lifetime; the first touch is written once.
  function track() {
    const now = Date.now();
    open();
    const seen = pageTouch(now);
    if (!granted()) { state = { first: null, current: seen.touch }; return; }
    referred = 1;
    // A session ending more than 30 minutes ahead was written before the clock went back: it is over.
    const left = (load('session') || {}).expires - now;
    const inSession = left > 0 && left <= SESSION;
    save('session', { expires: now + SESSION });
    let current = fresh(load('current'), now);
    if (!current || seen.kind > 1 || (seen.kind && !inSession)) current = seen.touch;
    save('current', { touch: current, expires: now + LIFETIME });
    let first = fresh(load('first'), now);
    if (!first) {
      first = current;
      save('first', { touch: first, expires: now + LIFETIME });
    }
    // Nothing could be kept (cookies and storage blocked): the first touch is unknown, so none is claimed.
    state = { first: load('session') ? first : null, current };
  }

  const fresh = (item, now) => (item && item.expires > now && item.touch) || null;

  // Re-read at submit time: another tab may have brought a newer touch.
  function snapshot() {
    const now = Date.now();
    return { first: fresh(load('first'), now) || state.first, current: fresh(load('current'), now) || state.current };
  }

  function touchFields() {
    const fields = {};
    const { first, current } = snapshot();
    SENT.forEach((name) => {
      if (current && current[name]) fields[name] = current[name];
      if (first && first[name]) fields['first_' + name] = first[name];
    });
    if (first) fields.first_seen_at = first.seen_at;
    if (granted()) {
      // ym() answers once its counter is up (often later): asked again at every submit, the cookie until then.
      try { if (cfg.counter) ym(cfg.counter, 'getClientID', (id) => { ymId = id; }); } catch (e) { /* no counter */ }
      const metrica = ymId || readCookie('_ym_uid');
      const ga = readCookie('_ga');
      if (metrica) fields.ym_client_id = clip(metrica);
      if (ga) fields.ga_client_id = clip(ga);
    }
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
    // Tags and click ids are one unit: when the visit has any, they replace the site's own tag fields whole (a
    // CMS's hidden utm_source must not mix with another visit's campaign). Otherwise the site's non-empty fields win.
    const tagged = TAGS.some((name) => touch[name]);
    if (tagged) TAGS.forEach((name) => { delete fields[name]; });
    Object.keys(touch).forEach((name) => { if (!fields[name]) { fields[name] = touch[name]; added.push(name); } });
    return { fields, added, next };
  }

  function endpointFor(form, formId) {
    const base = (form && form.getAttribute('data-throughline-endpoint')) || cfg.endpoint;
    if (base) return base.replace(/\/+$/, '') + '/' + encodeURIComponent(formId) + '/submissions';
    const action = form && form.getAttribute('action');
    const url = action ? new URL(action, document.baseURI).href : '';
    return /\/submissions\/?$/.test(url) && url;
  }

  const transient = (code) => code === 0 || code >= 500 || code === 408 || code === 429;
  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  async function post(url, body) {
    try {
      // A text body goes as text/plain;charset=UTF-8 (the Fetch standard's default), which keeps the request "simple":
      // no CORS preflight. keepalive lets it finish if the visitor leaves. A POST is never answered from a cache.
      const response = await fetch(url, { method: 'POST', body, keepalive: !body[2e4], credentials: 'omit' });
      const data = await response.json().catch(() => ({}));
      return { code: response.status, data: data || {}, wait: +response.headers.get('Retry-After') || 0 };
    } catch (e) {
      return { code: 0, data: {}, wait: 0 }; // offline, refused, or CORS hid the answer
    }
  }

  async function deliver(url, p, attempts) {
    for (let attempt = 1; ; attempt++) {
      const result = await post(url, JSON.stringify(p.fields));
      const bad = Object.keys(result.data.fields || {});
      if (result.code >= 400 && result.code < 500 && bad.length && bad.every((name) => (p.added || []).includes(name))) {
        // Only fields we added were refused: a lead matters more than its tags, so send it without them.
        bad.forEach((name) => { delete p.fields[name]; });
        p.added = [];
        return deliver(url, p, attempts);
      }
      // A 429 that says "not for a while" (a flood limit's window) is kept for a later page, not hammered now.
      if (!transient(result.code) || attempt >= attempts || result.wait > 10) return result;
      await sleep(result.wait * 1000 || 1000 * 3 ** (attempt - 1) * (0.8 + Math.random() * 0.4));
    }
  }

  // Kept in localStorage until it is delivered (or refused, or a month old); resent on the next page load.
  const queued = () => { const q = load('queue'); return Array.isArray(q) ? q : []; };

  function enqueue(url, formId, p) {
    const body = JSON.stringify(p.fields);
    const queue = queued().filter((item) => JSON.stringify(item.fields) !== body);
    queue.push({ id: String(Math.random()).slice(2), url, form_id: formId, fields: p.fields, added: p.added, at: Date.now() });
    save('queue', queue.slice(-20));
    return queued().length > 0;
  }

  function updateQueued(id, change) {
    save('queue', queued().map((item) => (item.id === id ? change(item) : item)).filter(Boolean));
  }

  let flushing = false;
  async function flush() {
    if (flushing || !granted()) return;
    flushing = true;
    try {
      for (const item of queued()) {
        if (item.lock > Date.now()) continue; // another tab is sending it right now
        updateQueued(item.id, (it) => Object.assign(it, { lock: Date.now() + 3e4 }));
        const result = await deliver(item.url, item, 1); // one try per page load; the next load tries again
        const stale = Date.now() - item.at > QUEUE_DAYS;
        updateQueued(item.id, (it) => (transient(result.code) && !stale ? Object.assign(it, { lock: 0 }) : null));
        if (!transient(result.code)) emit(document, result.code < 300 ? 'sent' : 'invalid', Object.assign({ form_id: item.form_id, resent: true }, result.data));
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
      const label = ((((inputs[0] || {}).labels || [])[0] || {}).textContent || name).trim();
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
      (b) => /^(submit|image)$/.test(b.type) && !b.disabled);
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
    input.name = cfg.honeypot;
    input.tabIndex = -1;
    input.autocomplete = 'off';
    input.setAttribute('aria-hidden', 'true');
    // Off-screen rather than display:none, which bots skip.
    input.style.cssText = 'position:absolute!important;left:-10000px!important';
    form.appendChild(input);
  }

  const guard = (fn, fallback) => (...args) => { try { return fn(...args); } catch (error) { warn(error); return fallback; } };

  window.Throughline = {
    version: '1.2.0',
    init: guard((options) => { Object.assign(cfg, options); return window.Throughline; }),
    // For a cookie banner: true starts remembering touches (run it on every page once the visitor agreed); false
    // forgets them. Only needed with data-require-consent.
    consent: guard((yes) => { consented = !!yes; if (yes) track(); else forget(); }),
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
    try { document.querySelectorAll('form[data-throughline-form]').forEach(addHoneypot); touchFields(); } catch (error) { warn(error); }
    window.Throughline.flush();
  };
  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', ready); else ready();
  window.addEventListener('online', window.Throughline.flush);
})();
