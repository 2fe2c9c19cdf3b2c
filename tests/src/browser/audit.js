// The portal's accessibility audit, run in the page by Page::audit.
// `contrast()`: each visible text's colour against the background behind it,
// by WCAG 2's formula; below 4.5:1 (3:1 for large text) is a problem.
// `focusables()`: what a keyboard must reach (links, buttons, fields), each
// marked with data-audit-id; Monaco's and the terminal's insides are their
// own (they take Tab for indentation and the shell) and are left out.
(() => {
  const skip = (el) => el.closest('.monaco-editor, .xterm, iframe, [aria-hidden=true]');
  const visible = (el) => {
    const s = getComputedStyle(el);
    const r = el.getBoundingClientRect();
    return s.visibility !== 'hidden' && s.display !== 'none' && r.width > 0 && r.height > 0
      && parseFloat(s.opacity) > 0;
  };
  const rgba = (c) => {
    const m = c.match(/rgba?\(([^)]+)\)/);
    if (!m) return [0, 0, 0, 0];
    const p = m[1].split(/[ ,/]+/).filter(Boolean).map(Number);
    return [p[0], p[1], p[2], p.length > 3 ? p[3] : 1];
  };
  const over = (top, under) => {
    const a = top[3];
    return [0, 1, 2].map(i => top[i] * a + under[i] * (1 - a)).concat(1);
  };
  const background = (el) => {
    const layers = [];
    for (let e = el; e; e = e.parentElement) {
      const c = rgba(getComputedStyle(e).backgroundColor);
      if (c[3] > 0) layers.push(c);
      if (c[3] >= 1) break;
    }
    let bg = [255, 255, 255, 1];
    for (const l of layers.reverse()) bg = over(l, bg);
    return bg;
  };
  const lum = (c) => {
    const ch = c.slice(0, 3).map(v => {
      v /= 255;
      return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4);
    });
    return 0.2126 * ch[0] + 0.7152 * ch[1] + 0.0722 * ch[2];
  };
  const contrast = () => {
    const bad = [];
    for (const el of document.querySelectorAll('body *')) {
      if (skip(el) || !visible(el)) continue;
      if (el.matches(':disabled, [disabled]') || el.closest('[disabled]')) continue; // inactive: exempt
      const text = [...el.childNodes].filter(n => n.nodeType === 3).map(n => n.textContent).join('').trim();
      const s = getComputedStyle(el);
      // Placeholders are text too.
      const probes = [];
      if (text) probes.push([text, rgba(s.color)]);
      if (el.placeholder && !el.value) probes.push(['placeholder ' + el.placeholder, rgba(getComputedStyle(el, '::placeholder').color)]);
      const bg = background(el);
      const size = parseFloat(s.fontSize);
      const large = size >= 24 || (size >= 18.66 && Number(s.fontWeight) >= 700);
      for (const [what, fg0] of probes) {
        const fg = over(fg0, bg);
        const [a, b] = [lum(fg), lum(bg)].sort((x, y) => y - x);
        const ratio = (a + 0.05) / (b + 0.05);
        if (ratio < (large ? 3 : 4.5)) {
          bad.push(`${el.tagName.toLowerCase()}${el.className ? '.' + el.className : ''} "${what.slice(0, 40)}": ${ratio.toFixed(2)}:1`);
        }
      }
    }
    return bad;
  };
  const focusables = () => {
    const sel = 'a[href], button:not([disabled]), input:not([disabled]), select, textarea, summary, [tabindex]:not([tabindex="-1"])';
    return [...document.querySelectorAll(sel)].filter(el => !skip(el) && visible(el)).map((el, i) => {
      el.dataset.auditId = String(i);
      return `${el.tagName.toLowerCase()} "${(el.textContent || el.getAttribute('aria-label') || el.name || '').trim().slice(0, 30)}"`;
    });
  };
  return { contrast, focusables };
})()
