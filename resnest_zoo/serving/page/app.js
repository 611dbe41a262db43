// The page of resnest-zoo serve: choose a model, drop or pick a photo, see the overlay, the mask and the classes.
// It talks to the same server only (/v1/models, /v1/models/NAME/predict?format=json) and loads nothing else.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const page = { models: [], file: null, result: null, photo: null, mask: null };

  function setState(name) { document.body.dataset.state = name; }
  function setStatus(text) { $("status").textContent = text; }
  function showError(text) {
    $("error").textContent = text || "";
    $("error").hidden = !text;
  }

  async function errorText(response) {
    try {
      const body = await response.json();
      return `${body.error}: ${body.detail}`;
    } catch (_) {
      return `the server answered HTTP ${response.status}`;
    }
  }

  async function loadModels() {
    let response;
    try {
      response = await fetch("/v1/models", { headers: { Accept: "application/json" } });
    } catch (_) {
      setStatus("Cannot reach the server; trying again\u2026");
      setTimeout(loadModels, 2000);
      return;
    }
    if (response.status === 503) {  // still loading
      setStatus(`${(await response.json()).detail}`);
      setTimeout(loadModels, 1000);
      return;
    }
    if (!response.ok) {
      showError(await errorText(response));
      setStatus("");
      return;
    }
    page.models = (await response.json()).models;
    const select = $("model");
    select.replaceChildren(...page.models.map((m) => new Option(`${m.name} \u2014 ${m.num_classes} classes`, m.name)));
    select.disabled = false;
    setStatus(`${page.models.length} model${page.models.length === 1 ? "" : "s"} ready`);
    setState("ready");
  }

  function loadImage(source) {
    return new Promise((resolve, reject) => {
      const image = new Image();
      image.onload = () => resolve(image);
      image.onerror = () => reject(new Error("this browser cannot show the picture"));
      image.src = source;
    });
  }

  async function segment(file) {
    if (!file) return;
    page.file = file;
    showError("");
    if (!page.models.length) {
      showError("No model is ready yet; wait for the models to load.");
      return;
    }
    const name = $("model").value;
    setState("busy");
    setStatus(`Segmenting ${file.name} with ${name}\u2026`);
    const began = performance.now();
    let response;
    try {
      response = await fetch(`/v1/models/${name}/predict?format=json`, {
        method: "POST",
        body: file,
        headers: { "Content-Type": file.type || "application/octet-stream" },
      });
    } catch (error) {
      showError(`Cannot reach the server (${error.message}).`);
      setStatus("");
      setState("ready");
      return;
    }
    if (!response.ok) {
      showError(await errorText(response));
      setStatus("");
      setState("ready");
      return;
    }
    const result = await response.json();
    const seconds = (performance.now() - began) / 1000;
    try {
      [page.photo, page.mask] = await Promise.all([
        loadImage(URL.createObjectURL(file)),
        loadImage(`data:image/png;base64,${result.mask_png}`),
      ]);
    } catch (error) {
      showError(error.message);
      setState("ready");
      return;
    }
    page.result = result;
    drawOverlay();
    $("mask").src = page.mask.src;
    showLegend(result);
    const download = $("download");
    download.href = page.mask.src;
    download.download = `${file.name.replace(/\.[^.]*$/, "") || "photo"}_mask.png`;
    $("results").hidden = false;
    setStatus(`${name}: ${result.width} \u00d7 ${result.height} px, ${result.classes.length} classes, ${seconds.toFixed(2)} s`);
    setState("done");
  }

  function drawOverlay() {
    const { photo, mask, result } = page;
    if (!result) return;
    const alpha = Number($("alpha").value);
    const width = result.width;
    const height = result.height;
    const canvas = $("overlay");
    canvas.width = width;
    canvas.height = height;
    const context = canvas.getContext("2d");
    context.drawImage(photo, 0, 0, width, height);  // browsers apply the photo's EXIF orientation, as the server does
    const picture = context.getImageData(0, 0, width, height);
    const scratch = document.createElement("canvas");
    scratch.width = width;
    scratch.height = height;
    const scratchContext = scratch.getContext("2d");
    scratchContext.drawImage(mask, 0, 0);
    const colours = scratchContext.getImageData(0, 0, width, height).data;
    const pixels = picture.data;
    for (let i = 0; i < pixels.length; i += 4) {
      for (let c = 0; c < 3; c += 1) {
        pixels[i + c] = Math.round((1 - alpha) * pixels[i + c] + alpha * colours[i + c]);
      }
    }
    context.putImageData(picture, 0, 0);
    canvas.dataset.ready = "true";
  }

  function showLegend(result) {
    const items = result.classes.map((entry) => {
      const item = document.createElement("li");
      item.dataset.classId = String(entry.id);
      const swatch = document.createElement("span");
      swatch.className = "swatch";
      swatch.style.backgroundColor = `rgb(${entry.color.join(",")})`;
      const name = document.createElement("span");
      name.className = "class-name";
      name.textContent = entry.name;
      const share = document.createElement("span");
      share.className = "share";
      share.textContent = `${(entry.share * 100).toFixed(1)} %`;
      item.append(swatch, name, share);
      return item;
    });
    $("legend").replaceChildren(...items);
  }

  function wireDropZone() {
    const zone = $("drop");
    const input = $("file");
    input.addEventListener("change", () => segment(input.files[0]));
    zone.addEventListener("keydown", (event) => {
      if (event.key === "Enter" || event.key === " ") {
        event.preventDefault();
        input.click();
      }
    });
    ["dragenter", "dragover"].forEach((type) => zone.addEventListener(type, (event) => {
      event.preventDefault();
      zone.classList.add("over");
    }));
    ["dragleave", "drop"].forEach((type) => zone.addEventListener(type, () => zone.classList.remove("over")));
    zone.addEventListener("drop", (event) => {
      event.preventDefault();
      segment(event.dataTransfer.files[0]);
    });
    $("alpha").addEventListener("input", drawOverlay);
    $("model").addEventListener("change", () => { if (page.file) segment(page.file); });
  }

  wireDropZone();
  loadModels();
})();
