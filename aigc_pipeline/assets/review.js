(function () {
  'use strict';
  var token = document.querySelector('meta[name="review-token"]').getAttribute('content');
  var current = null;

  function visible() { return window.aigcGallery.visible(); }
  function focus(card) {
    if (current) { current.classList.remove('current'); }
    current = card;
    if (card) { card.classList.add('current'); card.scrollIntoView({ block: 'nearest' }); }
  }
  function move(step) {
    var cards = visible();
    if (!cards.length) { return; }
    var index = current ? cards.indexOf(current) : -1;
    focus(cards[Math.max(0, Math.min(cards.length - 1, index + step))] || cards[0]);
  }
  function takeOf(card) {
    var select = card.querySelector('select.take-select');
    return select ? parseInt(select.value, 10) : null;
  }
  function decide(card, decision, output) {
    var note = card.querySelector('input.note');
    var body = { row: card.getAttribute('data-row'), decision: decision, output: output || '',
      note: note && !output ? note.value : '', take: takeOf(card) };
    return fetch('/api/decision', {
      method: 'POST', credentials: 'same-origin',
      headers: { 'Content-Type': 'application/json', 'X-Review-Token': token },
      body: JSON.stringify(body)
    }).then(function (response) {
      if (!response.ok) { throw new Error('HTTP ' + response.status); }
      return response.json();
    }).then(function (answer) { show(card, answer.review, decision, output); })
      .catch(function (error) { card.setAttribute('data-error', String(error)); });
  }
  function show(card, review, decision, output) {
    card.setAttribute('data-review', review);
    var badge = card.querySelector('[data-review-badge]');
    if (badge) { badge.textContent = review; badge.className = 'badge review-' + review; }
    card.querySelectorAll('.review button[data-decide]').forEach(function (button) {
      button.classList.toggle('on', !output && button.getAttribute('data-decide') === decision);
    });
  }
  function pickTake(card, step) {
    var select = card.querySelector('select.take-select');
    if (!select) { return; }
    select.selectedIndex = (select.selectedIndex + step + select.options.length) % select.options.length;
    select.dispatchEvent(new Event('change', { bubbles: true }));
  }

  window.aigcGallery.cards.forEach(function (card) {
    var review = card.getAttribute('data-review');
    if (review === 'approved' || review === 'rejected') { show(card, review, review, ''); }
    var names = (card.querySelector('.review') || { getAttribute: function () { return ''; } }).getAttribute('data-outputs');
    card.querySelectorAll('.media figure, .out').forEach(function (block) {
      var label = block.querySelector('label');
      if (!label || !names || names.split(',').indexOf(label.textContent) < 0) { return; }
      var button = document.createElement('button');
      button.className = 'reject-output';
      button.textContent = 'reject ' + label.textContent;
      button.addEventListener('click', function () { block.classList.add('rejected'); decide(card, 'rejected', label.textContent); });
      block.appendChild(button);
    });
  });
  document.addEventListener('click', function (event) {
    var button = event.target.closest ? event.target.closest('.review button[data-decide]') : null;
    if (!button) { return; }
    var card = button.closest('.card');
    focus(card);
    decide(card, button.getAttribute('data-decide'), '');
  });
  document.addEventListener('change', function (event) {
    if (event.target.classList.contains('note')) {  // a note is kept with the card's decision
      var owner = event.target.closest('.card'), decided = owner.getAttribute('data-review');
      if (decided === 'approved' || decided === 'rejected') { decide(owner, decided, ''); }
      return;
    }
    if (!event.target.classList.contains('take-select')) { return; }
    var card = event.target.closest('.card');
    var box = card.querySelector('.takes');
    var chosen = event.target.value, latest = box.getAttribute('data-current');
    box.querySelectorAll('.take').forEach(function (take) { take.hidden = take.getAttribute('data-take') !== chosen; });
    card.querySelectorAll(':scope > .media, :scope > .out').forEach(function (block) { block.hidden = chosen !== latest; });
  });
  document.addEventListener('gallery:render', function () { if (current && !current.isConnected) { focus(null); } });
  document.addEventListener('keydown', function (event) {
    var typing = event.target && (event.target.tagName === 'INPUT' || event.target.tagName === 'SELECT');
    if (typing) {
      if (event.key === 'Enter' || event.key === 'Escape') { event.target.blur(); }
      return;
    }
    if (event.ctrlKey || event.metaKey || event.altKey) { return; }
    var key = event.key;
    if (key === 'j' || key === 'ArrowRight' || key === 'ArrowDown') { event.preventDefault(); move(1); return; }
    if (key === 'k' || key === 'ArrowLeft' || key === 'ArrowUp') { event.preventDefault(); move(-1); return; }
    if (!current) { if (key === 'a' || key === 'r') { move(0); } else { return; } }
    var card = current;
    if (key === 'a' || key === 'r') {
      event.preventDefault();
      decide(card, key === 'a' ? 'approved' : 'rejected', '');
      move(1);
    } else if (key === 'u') {
      decide(card, 'pending', '');
    } else if (key === 'n') {
      event.preventDefault();
      var note = card.querySelector('input.note');
      if (note) { note.focus(); }
    } else if (key === 't') {
      pickTake(card, 1);
    }
  });
  var cards = visible();
  if (cards.length) { focus(cards[0]); }
})();
