(function () {
  'use strict';
  var gallery = document.querySelector('#rows .gallery');
  // The first page's cards are in the gallery; the rest wait in <template id="more-cards">.
  var more = document.getElementById('more-cards');
  var cards = gallery ? Array.prototype.slice.call(gallery.querySelectorAll('.card')) : [];
  if (more) { cards = cards.concat(Array.prototype.slice.call(more.content.children)); }
  var PAGE = 60;
  var view = { show: 'all', query: '', page: 0, list: cards };
  var texts = null;  // each card's lower-cased text, built on the first search

  function reviewOf(card) { return card.getAttribute('data-review') || 'pending'; }
  function matches(card, index) {
    var want = view.show;
    var ok = want === 'all' || card.getAttribute('data-status') === want ||
      (want === 'flagged' && card.getAttribute('data-flagged') === '1') ||
      (want.indexOf('review-') === 0 && reviewOf(card) === want.slice(7));
    return ok && (!view.query || texts[index].indexOf(view.query) >= 0);
  }
  function render() {
    view.list = cards.filter(matches);
    var pages = Math.max(1, Math.ceil(view.list.length / PAGE));
    view.page = Math.min(view.page, pages - 1);
    var first = view.page * PAGE;
    gallery.replaceChildren.apply(gallery, view.list.slice(first, first + PAGE));
    pager(pages, first);
    document.dispatchEvent(new CustomEvent('gallery:render'));
  }
  function pager(pages, first) {
    ['pager', 'pager-bottom'].forEach(function (id) {
      var box = document.getElementById(id);
      if (!box) { return; }
      box.textContent = '';
      var last = Math.min(first + PAGE, view.list.length);
      var label = document.createElement('span');
      label.textContent = (view.list.length ? (first + 1) + '–' + last : '0') + ' of ' + view.list.length + ' ';
      box.appendChild(label);
      if (pages < 2) { return; }
      [['‹ prev', -1], ['next ›', 1]].forEach(function (spec) {
        var button = document.createElement('button');
        button.textContent = spec[0];
        button.disabled = view.page + spec[1] < 0 || view.page + spec[1] >= pages;
        button.addEventListener('click', function () { view.page += spec[1]; render(); window.scrollTo(0, gallery.offsetTop - 80); });
        box.appendChild(button);
      });
    });
  }
  window.aigcGallery = { render: render, cards: cards,
    visible: function () { return Array.prototype.slice.call(gallery.children); } };

  var buttons = document.querySelectorAll('button[data-show]');
  buttons.forEach(function (button) {
    if (button.getAttribute('data-show') === 'all') { button.classList.add('on'); }
    button.addEventListener('click', function () {
      view.show = button.getAttribute('data-show');
      view.page = 0;
      buttons.forEach(function (other) { other.classList.toggle('on', other === button); });
      render();
    });
  });
  var search = document.getElementById('search');
  var timer = null;
  if (search) {
    search.addEventListener('input', function () {
      clearTimeout(timer);
      timer = setTimeout(function () {
        if (texts === null) { texts = cards.map(function (c) { return c.textContent.toLowerCase(); }); }
        view.query = search.value.trim().toLowerCase();
        view.page = 0;
        render();
      }, 150);
    });
  }
  document.addEventListener('keydown', function (event) {
    if (event.key === '/' && document.activeElement !== search && search) { event.preventDefault(); search.focus(); }
    if (event.key === 'Escape') { closeBox(); }
  });
  if (cards.length > PAGE) { pager(Math.ceil(cards.length / PAGE), 0); } else { pager(1, 0); }

  var box = document.getElementById('lightbox');
  function closeBox() { if (box) { box.hidden = true; box.textContent = ''; } }
  document.addEventListener('click', function (event) {
    var target = event.target;
    if (target && target.tagName === 'IMG' && target.classList.contains('zoom') && box) {
      box.textContent = '';
      var big = document.createElement('img');
      big.src = target.currentSrc || target.src;
      big.alt = target.alt;
      var caption = document.createElement('p');
      var owner = target.closest('.card');
      caption.textContent = (owner ? owner.querySelector('header b').textContent + ' · ' : '') + target.alt + ' (Esc closes)';
      box.appendChild(big);
      box.appendChild(caption);
      box.hidden = false;
    } else if (box && !box.hidden && box.contains(target)) {
      closeBox();
    }
  });

  window.addEventListener('load', function () {
    var images = Array.prototype.slice.call(document.images).filter(function (img) { return img.loading !== 'lazy'; });
    var loaded = images.filter(function (img) { return img.complete && img.naturalWidth > 0; }).length;
    var line = document.getElementById('images-loaded');
    line.setAttribute('data-loaded', String(loaded));
    line.setAttribute('data-total', String(images.length));
    line.textContent = loaded + ' of ' + images.length + ' images loaded';
  });
})();
