// Warren's panel on a queue's page of the management UI (rabbit_warren_mgmt.erl
// serves /api/warren/queues/VHOST/QUEUE). Shown only for queues Warren backs.
dispatcher_add(function(sammy) {
    // Registered before the queue page's requests are made (as the UI's own
    // extensions do), so a refresh of the page asks for it too.
    QUEUE_EXTRA_CONTENT_REQUESTS.push(function(vhost, queue) {
        return {'extra_warren': '/warren/queues/' + esc(vhost) + '/' + esc(queue)};
    });
    QUEUE_EXTRA_CONTENT.push(function(queue, extraContent) {
        var w = extraContent['extra_warren'];
        if (w === undefined || w.backing_queue !== 'warren') return '';
        var rows = [
            ['Ready', fmt_num_thousands(w.len)],
            ['Unacknowledged (pending acks)', fmt_num_thousands(w.pending_acks)],
            ['Persistent messages', fmt_num_thousands(w.persistent_count)],
            ['Persistent bytes', fmt_bytes(w.warren_persistent_bytes)],
            ['Ready messages with a TTL', fmt_num_thousands(w.warren_expiring)],
            ['Read-ahead (messages reserved / window)', fmt_num_thousands(w.warren_reserved_ahead) + ' / ' + fmt_num_thousands(w.warren_read_ahead)],
            ['Next sequence number', fmt_num_thousands(w.next_seq_id)],
            ['Sidecar session', fmt_string(w.warren_session)]
        ];
        var html = '<div class="section" id="warren-panel"><h2 class="updatable">Warren</h2>' +
            '<div class="hider updatable"><table class="facts facts-l">';
        for (var i = 0; i < rows.length; i++) {
            html += '<tr><th>' + rows[i][0] + '</th><td class="warren-' + i + '">' + rows[i][1] + '</td></tr>';
        }
        return html + '</table></div></div>';
    });
});
