// Demo only (a real site writes its endpoint into the script tag): the API address may come from ?endpoint=, for
// this page only. It is never remembered: a stored endpoint from a crafted link would send every later form on the
// site to whoever made the link. The plain-HTML fallback (action, _next) is pointed at the same places, so the form
// still posts if the snippet fails to load.
(() => {
  'use strict';
  // Only a web address: `?endpoint=javascript:…` became the plain form's action, script run on submit.
  const webAddress = (text) => { try { return /^https?:$/.test(new URL(text).protocol) ? text : null; } catch (e) { return null; } };
  const endpoint = webAddress(new URLSearchParams(location.search).get('endpoint') || '');
  try {
    localStorage.removeItem('throughline-demo:endpoint'); // what older versions of this demo remembered
  } catch (e) { /* storage blocked: nothing was remembered either */ }
  if (endpoint && window.Throughline) window.Throughline.init({ endpoint });
  const form = document.getElementById('order');
  if (form) {
    const base = (endpoint || document.querySelector('script[data-endpoint]').getAttribute('data-endpoint')).replace(/\/+$/, '');
    form.setAttribute('action', base + '/demo-lead/submissions');
    form.querySelector('[name="_next"]').value = new URL('thanks.html', location.href).href;
  }
})();
