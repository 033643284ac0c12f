// DOM helpers. Every string from the server goes through textContent
// or a property (value, title, dataset): never innerHTML. Event fields
// are user-controlled (a user agent is attacker input).

export function $(sel, root = document) {
    return root.querySelector(sel);
}

export function el(tag, className, text) {
    const e = document.createElement(tag);
    if (className) {
        e.className = className;
    }
    if (text !== undefined && text !== null) {
        e.textContent = String(text);
    }
    return e;
}

export function svg(tag, attrs) {
    const e = document.createElementNS('http://www.w3.org/2000/svg', tag);
    for (const [k, v] of Object.entries(attrs || {})) {
        e.setAttribute(k, String(v));
    }
    return e;
}

// A string for display: what JSON may hold, never an object's markup.
export function str(v, none = '–') {
    if (v === undefined || v === null || v === '') {
        return none;
    }
    return typeof v === 'object' ? JSON.stringify(v) : String(v);
}

const two = (n) => String(n).padStart(2, '0');

export function clock(d) {
    return `${two(d.getHours())}:${two(d.getMinutes())}:` +
        two(d.getSeconds());
}

// "11-27": month and day, for events of another day
export function day(d) {
    return `${two(d.getMonth() + 1)}-${two(d.getDate())}`;
}

export function parseTime(v) {
    const d = new Date(typeof v === 'number' ? v : String(v || ''));
    return isNaN(d.getTime()) ? null : d;
}
