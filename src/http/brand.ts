// Tessera's mark for the API reference page (/docs): four tiles, a tessera being one tile of a
// mosaic. Inline, so it ships in dist/ (the image copies nothing else) and is served as a data:
// URL that the page's CSP (img-src 'self' data:) already allows.
const TILES =
  '<rect x="2" y="2" width="16" height="16" rx="2" fill="#2f6f8f"/><rect x="22" y="2" width="16" height="16" rx="2" fill="#e0a030"/>' +
  '<rect x="2" y="22" width="16" height="16" rx="2" fill="#e0a030"/><rect x="22" y="22" width="16" height="16" rx="2" fill="#2f6f8f"/>'

export const LOGO_SVG =
  '<svg xmlns="http://www.w3.org/2000/svg" width="160" height="40" viewBox="0 0 160 40"><title>Tessera</title>' +
  TILES +
  '<text x="48" y="29" font-family="Helvetica, Arial, sans-serif" font-size="24" font-weight="600" fill="#ffffff">Tessera</text></svg>'

export const FAVICON_SVG = `<svg xmlns="http://www.w3.org/2000/svg" width="32" height="32" viewBox="0 0 40 40">${TILES}</svg>`
