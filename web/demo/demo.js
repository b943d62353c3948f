// Demo only (a real site writes its endpoint into the script tag): the API address may come from ?endpoint=,
// remembered for the demo's other pages. The plain-HTML fallback (action, _next) is pointed at the same places,
// so the form still posts if the snippet fails to load.
(() => {
  'use strict';
  const key = 'throughline-demo:endpoint';
  let endpoint = new URLSearchParams(location.search).get('endpoint');
  try {
    if (endpoint) localStorage.setItem(key, endpoint);
    else endpoint = localStorage.getItem(key);
  } catch (e) { /* storage blocked: the default endpoint stays */ }
  if (endpoint && window.Throughline) window.Throughline.init({ endpoint });
  const form = document.getElementById('order');
  if (form) {
    const base = (endpoint || document.querySelector('script[data-endpoint]').getAttribute('data-endpoint')).replace(/\/+$/, '');
    form.setAttribute('action', base + '/demo-lead/submissions');
    form.querySelector('[name="_next"]').value = new URL('thanks.html', location.href).href;
  }
})();
