// A function's output in the page: text as text, a picture as a picture,
// anything else as its size; always a link that saves it.

import { bytes, h } from "./dom.js";

/** Text shown in the page at most; the download has it all. */
const PREVIEW_BYTES = 256 * 1024;

const urls = new Set();

/** Frees the object URLs of the page being left. */
export function revokeUrls() {
  for (const url of urls) URL.revokeObjectURL(url);
  urls.clear();
}

function objectUrl(blob) {
  const url = URL.createObjectURL(blob);
  urls.add(url);
  return url;
}

const PICTURES = [
  [[0x89, 0x50, 0x4e, 0x47], "image/png", "png"],
  [[0xff, 0xd8, 0xff], "image/jpeg", "jpg"],
  [[0x47, 0x49, 0x46, 0x38], "image/gif", "gif"],
];

/** What the bytes are: `text` (UTF-8 without control characters), a picture, or `binary`. */
async function sniff(blob) {
  const head = new Uint8Array(await blob.slice(0, PREVIEW_BYTES).arrayBuffer());
  for (const [magic, type, ext] of PICTURES) {
    if (magic.every((b, i) => head[i] === b)) return { kind: "image", type, ext };
  }
  const webp = [0x52, 0x49, 0x46, 0x46].every((b, i) => head[i] === b) && String.fromCharCode(...head.slice(8, 12)) === "WEBP";
  if (webp) return { kind: "image", type: "image/webp", ext: "webp" };
  try {
    // `stream`: a character cut at the preview's end is no error.
    const text = new TextDecoder("utf-8", { fatal: true }).decode(head, { stream: true });
    // eslint-disable-next-line no-control-regex
    if (!/[\u0000-\u0008\u000e-\u001a\u001c-\u001f\u007f]/.test(text)) {
      return { kind: "text", type: "text/plain", ext: "txt", text };
    }
  } catch {
    // Not UTF-8.
  }
  return { kind: "binary", type: "application/octet-stream", ext: "bin" };
}

/**
 * The output `blob` shown under element id `id`, with a download link
 * (id `${id}-download`) saving it as `${name}.${ext}`.
 */
export async function outputView(blob, id, name) {
  const what = await sniff(blob);
  const typed = new Blob([blob], { type: what.type });
  const link = h(
    "a",
    { id: `${id}-download`, class: "button", href: objectUrl(typed), download: `${name}.${what.ext}` },
    `Download (${bytes(blob.size)})`,
  );
  let preview;
  if (blob.size === 0) {
    preview = [h("pre", { id, class: "output" }), h("p", { class: "muted", text: "No output." })];
  } else if (what.kind === "text") {
    const cut = blob.size > PREVIEW_BYTES;
    preview = [
      h("pre", { id, class: "output", text: what.text }),
      cut ? h("p", { class: "muted", text: `The first ${bytes(PREVIEW_BYTES)} are shown; the download has all of it.` }) : null,
    ];
  } else if (what.kind === "image") {
    preview = h("img", { id, class: "output", src: objectUrl(typed), alt: "the output, as a picture" });
  } else {
    preview = h("p", { id, class: "muted", text: `Binary output, ${bytes(blob.size)}.` });
  }
  return h("div", { class: "output-view" }, preview, h("p", {}, link));
}
