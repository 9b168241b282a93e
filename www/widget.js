// The tabswarm widget for partner sites: one tag puts a small card on the page,
//
//   <script src="https://<tabswarm host>/www/widget.js" async></script>
//
// optionally with data-bootstrap="<multiaddr> <multiaddr>" and data-genesis="<url>" for a
// network other than the one the host serves. The card is an iframe of our card page inside a
// shadow root: the peer's wasm and Web Workers must load from our origin (a page can only
// start workers of its own origin), the partner's CSS cannot reach into the card, and the
// card asks for the same consent as the volunteer page before anything runs.
(() => {
  const script = document.currentScript;
  if (!script) return; // loaded as a module or injected late: nothing to anchor the card to
  const src = new URL(script.src, location.href);
  const card = new URL('card.html', src);
  for (const addr of (script.dataset.bootstrap ?? '').split(/\s+/).filter(Boolean)) {
    card.searchParams.append('bootstrap', addr);
  }
  if (script.dataset.genesis) card.searchParams.set('genesis', script.dataset.genesis);

  const host = document.createElement('tabswarm-card');
  const root = host.attachShadow({ mode: 'open' });
  const style = document.createElement('style');
  style.textContent = `
    :host { display: block; max-width: 360px; margin: 1rem 0; }
    iframe { width: 100%; height: 300px; border: 1px solid #d1d9e0; border-radius: 8px;
             background: #fff; display: block; }`;
  const frame = document.createElement('iframe');
  frame.src = card.href;
  frame.title = 'tabswarm: lend this tab to train an open model';
  root.append(style, frame);
  script.after(host);
})();
