// Driven by tests/docs_page.rs in headless Chromium on the /docs page:
// what a user does, click by click. TOKEN is replaced by the credential.
(async () => {
  const sleep = ms => new Promise(r => setTimeout(r, ms));
  const until = async (f, what) => {
    for (let i = 0; i < 200; i++) { const v = f(); if (v) return v; await sleep(50); }
    throw new Error("timed out waiting for " + what);
  };
  const setInput = (el, value) => {
    const setter = Object.getOwnPropertyDescriptor(
      Object.getPrototypeOf(el), "value").set;
    setter.call(el, value);
    el.dispatchEvent(new Event("input", { bubbles: true }));
    el.dispatchEvent(new Event("change", { bubbles: true }));
  };
  await until(() => window.ui && document.querySelector(".opblock"), "the operations");
  const operations = document.querySelectorAll(".opblock").length;
  // Authorize, as a user does: the dialog, the credential, "Authorize".
  document.querySelector(".btn.authorize").click();
  const field = await until(() => document.querySelector(".auth-container input"), "the dialog");
  setInput(field, "TOKEN");
  document.querySelector(".auth-btn-wrapper .btn.modal-btn.auth.authorize").click();
  await sleep(100);
  document.querySelector(".btn-done, .auth-btn-wrapper .btn-done, .close-modal")?.click();
  // The acquire operation: open it, "Try it out", a lock name, "Execute".
  const summary = await until(() => [...document.querySelectorAll(".opblock-post .opblock-summary-path")]
    .find(e => e.dataset.path === "/API/v1/locks/{name}"), "the acquire operation");
  const block = summary.closest(".opblock");
  summary.click();
  (await until(() => block.querySelector(".try-out__btn"), "Try it out")).click();
  await sleep(300);
  const name = await until(() => block.querySelector('tr[data-param-name="name"] input'), "the name field");
  setInput(name, "from-the-docs-page");
  // The field is debounced: its value reaches the form after a pause.
  await sleep(1000);
  (await until(() => block.querySelector(".execute"), "Execute")).click();
  const status = await until(() => block.querySelector(".live-responses-table .response .response-col_status"), "the response");
  const body = block.querySelector(".live-responses-table .response .microlight, .live-responses-table pre")?.textContent || "";
  return { status: status.textContent.trim(), body, operations };
})()
