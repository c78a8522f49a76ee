// njs (0.7, Debian 12) preread handler for the mqgate benchmark: read the
// MQTT CONNECT packet and put its client identifier in $mqtt_client_id, the
// key of "hash $mqtt_client_id consistent".

function preread(s) {
    var buf = null;
    s.on('upstream', function (data, flags) {
        if (data.length > 0) {
            buf = buf === null ? data : Buffer.concat([buf, data]);
        }
        var id = buf === null ? null : clientId(buf);
        if (id === null && !flags.last) {
            return; // the CONNECT is not complete yet: wait for more bytes
        }
        if (id !== null) {
            s.variables.mqtt_client_id = id;
        }
        s.off('upstream');
        s.done();
    });
}

// clientId returns the client identifier of the CONNECT packet at the start
// of b, null while b holds only part of the packet, or "" when b does not
// start with a CONNECT.
function clientId(b) {
    if (b.length < 2) {
        return null;
    }
    if ((b[0] >> 4) !== 1) {
        return "";
    }
    var i = 1, remaining = 0, mul = 1;
    for (;;) {
        if (i >= b.length) {
            return null;
        }
        var d = b[i++];
        remaining += (d & 127) * mul;
        if ((d & 128) === 0) {
            break;
        }
        if (i > 4) {
            return "";
        }
        mul *= 128;
    }
    if (b.length < i + remaining) {
        return null;
    }
    var end = i + remaining;
    var p = i + 2 + ((b[i] << 8) | b[i + 1]); // protocol name
    var level = b[p];
    p += 4; // level, flags, keep alive
    if (level === 5) { // MQTT 5.0: skip the properties
        var props = 0;
        mul = 1;
        for (;;) {
            var e = b[p++];
            props += (e & 127) * mul;
            if ((e & 128) === 0 || p >= end) {
                break;
            }
            mul *= 128;
        }
        p += props;
    }
    if (p + 2 > end) {
        return "";
    }
    var idLen = (b[p] << 8) | b[p + 1];
    if (p + 2 + idLen > end) {
        return "";
    }
    return b.slice(p + 2, p + 2 + idLen).toString();
}

export default {preread};
