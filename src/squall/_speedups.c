/*
 * squall._speedups: optional C versions of a few hot functions.
 *
 * Everything here has a pure-Python equivalent that squall uses when this
 * module is not built (no compiler at install time) or when the environment
 * sets SQUALL_NO_SPEEDUPS=1; the results are identical (the tests compare the
 * two on generated input).
 *
 * xhtml_escape(s): the HTML/XML escape of an exact str, in one pass over the
 * string's own storage (Latin-1, UCS-2 or UCS-4). The Python version needs an
 * "in" test per markup character and a replace() per character present; a
 * template escapes every {{ }} value, so this is the cost of rendering a page.
 *
 * header_lines(as_list): a response's header block, built and checked for
 * CR/LF (header injection) in two passes of memcpy, where Python formats,
 * joins and counts once per line.
 *
 * parse_qs(qs): a query string or form body into {name: [value bytes]}, as
 * urllib.parse.parse_qsl reads it, in one pass (parse_qsl splits, replaces
 * and unquotes each piece in Python).
 *
 * pair_appender(list) and build_headers(raw, names): the request header
 * callback the parser calls once per header, and the assembly of the
 * headers once the head is complete, without a Python frame per header.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

/* How many characters each markup character adds when replaced:
 * & -> &amp; (+4), < -> &lt; (+3), > -> &gt; (+3), " -> &quot; (+5),
 * ' -> &#x27; (+5). Every other character adds nothing. 256 entries, so
 * that a Latin-1 character indexes it without a range check. */
static const unsigned char growth[256] = {
    ['&'] = 4, ['<'] = 3, ['>'] = 3, ['"'] = 5, ['\''] = 5,
};

/* The replacement of each markup character (growth + 1 characters, at
 * least 4), padded with NULs to 8 bytes. */
static const char entities[128][8] = {
    ['&'] = "&amp;", ['<'] = "&lt;", ['>'] = "&gt;", ['"'] = "&quot;", ['\''] = "&#x27;",
};

/* The growth of one character of any width. */
#define GROWTH(c) ((c) < 256 ? growth[(c)] : 0)

/* The extra length of the escaped text of one storage width. */
#define COUNT_GROWTH(TYPE)                                          \
    do {                                                            \
        const TYPE *src = (const TYPE *)data;                       \
        for (Py_ssize_t i = 0; i < length; i++) {                   \
            extra += GROWTH(src[i]);                                \
        }                                                           \
    } while (0)

/* Copies src to dst with the five markup characters replaced. */
#define WRITE_ESCAPED(TYPE)                                         \
    do {                                                            \
        const TYPE *src = (const TYPE *)data;                       \
        TYPE *dst = (TYPE *)PyUnicode_DATA(result);                 \
        for (Py_ssize_t i = 0; i < length; i++) {                   \
            TYPE c = src[i];                                        \
            unsigned int n = GROWTH(c);                             \
            if (n == 0) {                                           \
                *dst++ = c;                                         \
                continue;                                           \
            }                                                       \
            const char *entity = entities[c];                       \
            dst[0] = (TYPE)entity[0];                               \
            dst[1] = (TYPE)entity[1];                               \
            dst[2] = (TYPE)entity[2];                               \
            dst[3] = (TYPE)entity[3];                               \
            if (n > 3) {                                            \
                dst[4] = (TYPE)entity[4];                           \
                if (n > 4) {                                        \
                    dst[5] = (TYPE)entity[5];                       \
                }                                                   \
            }                                                       \
            dst += n + 1;                                           \
        }                                                           \
    } while (0)

/* The escape of the exact str value (a new reference). */
static PyObject *
escape_str(PyObject *value)
{
    Py_ssize_t length = PyUnicode_GET_LENGTH(value);
    int kind = PyUnicode_KIND(value);
    const void *data = PyUnicode_DATA(value);
    size_t extra = 0;

    switch (kind) {
    case PyUnicode_1BYTE_KIND: COUNT_GROWTH(Py_UCS1); break;
    case PyUnicode_2BYTE_KIND: COUNT_GROWTH(Py_UCS2); break;
    default: COUNT_GROWTH(Py_UCS4); break;
    }
    if (extra == 0) {
        Py_INCREF(value);
        return value;
    }
    /* At most 5 extra per character: no overflow of size_t for any str
     * that fits in memory, but the result must fit a Py_ssize_t. */
    if (extra > (size_t)(PY_SSIZE_T_MAX - length)) {
        return PyErr_NoMemory();
    }
    /* The entities are ASCII: the result needs no wider storage. */
    PyObject *result = PyUnicode_New(length + (Py_ssize_t)extra,
                                     PyUnicode_MAX_CHAR_VALUE(value));
    if (result == NULL) {
        return NULL;
    }
    switch (kind) {
    case PyUnicode_1BYTE_KIND: WRITE_ESCAPED(Py_UCS1); break;
    case PyUnicode_2BYTE_KIND: WRITE_ESCAPED(Py_UCS2); break;
    default: WRITE_ESCAPED(Py_UCS4); break;
    }
    return result;
}

PyDoc_STRVAR(xhtml_escape_doc,
"xhtml_escape(value, other=None, /)\n--\n\n"
"The exact str value with &, <, >, \" and ' replaced by &amp;, &lt;, &gt;,\n"
"&quot; and &#x27; (value itself when it has none of them).\n\n"
"With other (a template's output rule): an exact int gives str(value),\n"
"since its digits need no escaping, and any other value other(value).\n"
"Without it, a value that is not exactly str raises TypeError.");

static PyObject *
xhtml_escape(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 1 || nargs > 2) {
        PyErr_Format(PyExc_TypeError,
                     "xhtml_escape() takes 1 or 2 positional arguments (%zd given)",
                     nargs);
        return NULL;
    }
    PyObject *value = args[0];
    if (PyUnicode_CheckExact(value)) {
        return escape_str(value);
    }
    if (nargs == 1) {
        PyErr_Format(PyExc_TypeError,
                     "xhtml_escape() argument must be str, not %.200s",
                     Py_TYPE(value)->tp_name);
        return NULL;
    }
    if (PyLong_CheckExact(value)) {
        return PyObject_Str(value);
    }
    return PyObject_CallOneArg(args[1], value);
}

/* Whether the Latin-1 text has a CR or an LF. */
static int
has_cr_or_lf(const Py_UCS1 *text, Py_ssize_t length)
{
    return memchr(text, '\r', length) != NULL || memchr(text, '\n', length) != NULL;
}

/* Whether value is a str this module may copy byte for byte: exact str,
 * one byte per character, no CR or LF. */
static int
plain_line_text(PyObject *value)
{
    return PyUnicode_CheckExact(value)
        && PyUnicode_KIND(value) == PyUnicode_1BYTE_KIND
        && !has_cr_or_lf(PyUnicode_1BYTE_DATA(value), PyUnicode_GET_LENGTH(value));
}

PyDoc_STRVAR(header_lines_doc,
"header_lines(as_list, /)\n--\n\n"
"The header block \"name: value\\r\\n\"... of a dict of header names to lists\n"
"of values, all exact str of Latin-1 characters without CR or LF. Returns\n"
"None for anything else (not a dict of lists, other types or characters,\n"
"a CR or LF: the caller's Python code then builds the block or raises).");

static PyObject *
header_lines(PyObject *module, PyObject *as_list)
{
    if (!PyDict_CheckExact(as_list)) {
        Py_RETURN_NONE;
    }
    Py_ssize_t pos = 0;
    PyObject *name, *values;
    Py_ssize_t total = 0;
    int ascii = 1;
    /* First pass: check everything and measure. */
    while (PyDict_Next(as_list, &pos, &name, &values)) {
        if (!plain_line_text(name) || !PyList_CheckExact(values)) {
            Py_RETURN_NONE;
        }
        Py_ssize_t name_length = PyUnicode_GET_LENGTH(name);
        Py_ssize_t count = PyList_GET_SIZE(values);
        if (count > 0) {
            /* Only text that is copied decides the result's form: a str
             * flagged Latin-1 must hold a character beyond ASCII. */
            ascii &= PyUnicode_IS_ASCII(name);
        }
        for (Py_ssize_t i = 0; i < count; i++) {
            PyObject *value = PyList_GET_ITEM(values, i);
            if (!plain_line_text(value)) {
                Py_RETURN_NONE;
            }
            ascii &= PyUnicode_IS_ASCII(value);
            Py_ssize_t line = name_length + PyUnicode_GET_LENGTH(value) + 4;
            if (line < 0 || total > PY_SSIZE_T_MAX - line) {
                Py_RETURN_NONE;
            }
            total += line;
        }
    }
    PyObject *result = PyUnicode_New(total, ascii ? 127 : 255);
    if (result == NULL) {
        return NULL;
    }
    /* Second pass: copy. Nothing ran in between, so the dict and its lists
     * are as measured. */
    Py_UCS1 *out = PyUnicode_1BYTE_DATA(result);
    pos = 0;
    while (PyDict_Next(as_list, &pos, &name, &values)) {
        Py_ssize_t name_length = PyUnicode_GET_LENGTH(name);
        const Py_UCS1 *name_data = PyUnicode_1BYTE_DATA(name);
        Py_ssize_t count = PyList_GET_SIZE(values);
        for (Py_ssize_t i = 0; i < count; i++) {
            PyObject *value = PyList_GET_ITEM(values, i);
            Py_ssize_t value_length = PyUnicode_GET_LENGTH(value);
            memcpy(out, name_data, name_length);
            out += name_length;
            *out++ = ':';
            *out++ = ' ';
            memcpy(out, PyUnicode_1BYTE_DATA(value), value_length);
            out += value_length;
            *out++ = '\r';
            *out++ = '\n';
        }
    }
    return result;
}

/* Appends value to the list under key in the dict of lists, making the
 * list on the key's first value. 0 on success, -1 with an exception set. */
static int
append_value(PyObject *dict, PyObject *key, PyObject *value)
{
    PyObject *values = PyDict_GetItemWithError(dict, key);
    if (values != NULL) {
        return PyList_Append(values, value);
    }
    if (PyErr_Occurred()) {
        return -1;
    }
    values = PyList_New(1);
    if (values == NULL) {
        return -1;
    }
    Py_INCREF(value);
    PyList_SET_ITEM(values, 0, value);
    int failed = PyDict_SetItem(dict, key, values);
    Py_DECREF(values);
    return failed;
}

/* The value of a hex digit, or -1. */
static int
hex_value(unsigned char c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    if (c >= 'A' && c <= 'F') {
        return c - 'A' + 10;
    }
    return -1;
}

/* Form-decodes text[0:length] into out (at least length bytes): '+' is a
 * space, "%XX" with two hex digits is that byte, any other '%' stays.
 * Returns the decoded length. */
static Py_ssize_t
form_decode(const char *text, Py_ssize_t length, char *out)
{
    Py_ssize_t n = 0;
    for (Py_ssize_t i = 0; i < length; i++) {
        char c = text[i];
        if (c == '+') {
            c = ' ';
        }
        else if (c == '%' && i + 2 < length) {
            int high = hex_value((unsigned char)text[i + 1]);
            int low = hex_value((unsigned char)text[i + 2]);
            if (high >= 0 && low >= 0) {
                c = (char)(high * 16 + low);
                i += 2;
            }
        }
        out[n++] = c;
    }
    return n;
}

PyDoc_STRVAR(parse_qs_doc,
"parse_qs(qs, max_fields, /)\n--\n\n"
"Parse an ASCII query string or urlencoded body as\n"
"urllib.parse.parse_qsl(qs, keep_blank_values=True, encoding='latin-1')\n"
"does, into a dict of names (str) to lists of values (bytes). Returns None\n"
"when qs is not an exact ASCII str or has max_fields or more '&' (the\n"
"caller's Python code then parses it, or refuses it).");

static PyObject *
parse_qs(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_Format(PyExc_TypeError, "parse_qs() takes 2 arguments (%zd given)", nargs);
        return NULL;
    }
    PyObject *qs = args[0];
    Py_ssize_t max_fields = PyLong_AsSsize_t(args[1]);
    if (max_fields == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (!PyUnicode_CheckExact(qs) || !PyUnicode_IS_ASCII(qs) || max_fields <= 0) {
        Py_RETURN_NONE;
    }
    const char *text = (const char *)PyUnicode_1BYTE_DATA(qs);
    Py_ssize_t length = PyUnicode_GET_LENGTH(qs);
    PyObject *result = PyDict_New();
    if (result == NULL) {
        return NULL;
    }
    char small[256];
    char *buffer = small;
    if (length > (Py_ssize_t)sizeof(small)) {
        buffer = PyMem_Malloc(length);
        if (buffer == NULL) {
            Py_DECREF(result);
            return PyErr_NoMemory();
        }
    }
    Py_ssize_t start = 0;
    Py_ssize_t separators = 0;
    while (start <= length) {
        const char *amp = memchr(text + start, '&', length - start);
        Py_ssize_t end = amp == NULL ? length : amp - text;
        if (amp != NULL && ++separators >= max_fields) {
            /* Too many fields: the caller refuses the whole text. */
            if (buffer != small) {
                PyMem_Free(buffer);
            }
            Py_DECREF(result);
            Py_RETURN_NONE;
        }
        if (end > start) {
            const char *pair = text + start;
            Py_ssize_t pair_length = end - start;
            const char *equals = memchr(pair, '=', pair_length);
            Py_ssize_t name_length = equals == NULL ? pair_length : equals - pair;
            Py_ssize_t n = form_decode(pair, name_length, buffer);
            PyObject *name = PyUnicode_DecodeLatin1(buffer, n, NULL);
            if (name == NULL) {
                goto error;
            }
            n = 0;
            if (equals != NULL) {
                n = form_decode(equals + 1, pair_length - name_length - 1, buffer);
            }
            PyObject *value = PyBytes_FromStringAndSize(buffer, n);
            if (value == NULL) {
                Py_DECREF(name);
                goto error;
            }
            int failed = append_value(result, name, value);
            Py_DECREF(name);
            Py_DECREF(value);
            if (failed < 0) {
                goto error;
            }
        }
        start = end + 1;
    }
    if (buffer != small) {
        PyMem_Free(buffer);
    }
    return result;

error:
    if (buffer != small) {
        PyMem_Free(buffer);
    }
    Py_DECREF(result);
    return NULL;
}

/* The server's request header callback: appends the name and the value
 * (two items, no tuple) to the list it is bound to. */
static PyObject *
append_pair(PyObject *list, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_Format(PyExc_TypeError, "expected 2 arguments, got %zd", nargs);
        return NULL;
    }
    if (PyList_Append(list, args[0]) < 0 || PyList_Append(list, args[1]) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyMethodDef append_pair_def = {
    "append_pair", (PyCFunction)(void (*)(void))append_pair, METH_FASTCALL,
    "append_pair(name, value, /)\n--\n\nAppend name and value to the bound list.",
};

PyDoc_STRVAR(pair_appender_doc,
"pair_appender(items, /)\n--\n\n"
"A callable taking (name, value) that appends both, in that order, to the\n"
"list items: the request parser's header callback, without a Python frame.");

static PyObject *
pair_appender(PyObject *module, PyObject *items)
{
    if (!PyList_CheckExact(items)) {
        PyErr_Format(PyExc_TypeError, "pair_appender() argument must be list, not %.200s",
                     Py_TYPE(items)->tp_name);
        return NULL;
    }
    return PyCFunction_NewEx(&append_pair_def, items, NULL);
}

/* The roles of header names, as squall._http1server numbers them. */
enum { ROLE_OTHER, ROLE_CONTENT_LENGTH, ROLE_TRANSFER_ENCODING, ROLE_CONNECTION,
       ROLE_EXPECT, ROLE_CONTENT_ENCODING, ROLE_COUNT };

PyDoc_STRVAR(build_headers_doc,
"build_headers(raw, names, /)\n--\n\n"
"Assemble a request's headers from raw, a flat list of name and value\n"
"bytes as the parser gave them. names maps each raw name to a tuple\n"
"(normalized name, role). Values are read as Latin-1 without trailing\n"
"spaces and tabs. Returns (as_list, content_length, transfer_encoding,\n"
"connection, expect, content_encoding): the dict of names to lists of\n"
"values, then the last value of each role (connection: all of them,\n"
"joined by commas) or None. Returns None when a name is not in names or\n"
"anything has another shape (the caller's Python code then does it).");

static PyObject *
build_headers(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_Format(PyExc_TypeError, "build_headers() takes 2 arguments (%zd given)", nargs);
        return NULL;
    }
    PyObject *raw = args[0], *names = args[1];
    if (!PyList_CheckExact(raw) || !PyDict_CheckExact(names) || PyList_GET_SIZE(raw) % 2) {
        Py_RETURN_NONE;
    }
    /* Every name must be known first: nothing is built for a deferral. */
    Py_ssize_t count = PyList_GET_SIZE(raw);
    for (Py_ssize_t i = 0; i < count; i += 2) {
        PyObject *raw_name = PyList_GET_ITEM(raw, i);
        PyObject *raw_value = PyList_GET_ITEM(raw, i + 1);
        if (!PyBytes_CheckExact(raw_name) || !PyBytes_CheckExact(raw_value)) {
            Py_RETURN_NONE;
        }
        PyObject *info = PyDict_GetItemWithError(names, raw_name);
        if (info == NULL) {
            if (PyErr_Occurred()) {
                return NULL;
            }
            Py_RETURN_NONE;
        }
        if (!PyTuple_CheckExact(info) || PyTuple_GET_SIZE(info) != 2
                || !PyUnicode_CheckExact(PyTuple_GET_ITEM(info, 0))
                || !PyLong_CheckExact(PyTuple_GET_ITEM(info, 1))) {
            Py_RETURN_NONE;
        }
    }
    PyObject *as_list = PyDict_New();
    if (as_list == NULL) {
        return NULL;
    }
    PyObject *roles[ROLE_COUNT] = {NULL};
    for (Py_ssize_t i = 0; i < count; i += 2) {
        PyObject *raw_name = PyList_GET_ITEM(raw, i);
        PyObject *raw_value = PyList_GET_ITEM(raw, i + 1);
        PyObject *info = PyDict_GetItemWithError(names, raw_name);
        if (info == NULL) {
            /* names changed under us: only possible through a hash that
             * runs Python code, which bytes keys do not have. */
            if (!PyErr_Occurred()) {
                PyErr_SetString(PyExc_RuntimeError, "header name cache changed");
            }
            goto error;
        }
        PyObject *name = PyTuple_GET_ITEM(info, 0);
        long role = PyLong_AsLong(PyTuple_GET_ITEM(info, 1));
        if (role == -1 && PyErr_Occurred()) {
            goto error;
        }
        const char *data = PyBytes_AS_STRING(raw_value);
        Py_ssize_t length = PyBytes_GET_SIZE(raw_value);
        /* llhttp drops leading whitespace, not trailing (RFC 9110 5.5). */
        while (length > 0 && (data[length - 1] == ' ' || data[length - 1] == '\t')) {
            length--;
        }
        PyObject *value = PyUnicode_DecodeLatin1(data, length, NULL);
        if (value == NULL) {
            goto error;
        }
        int failed = append_value(as_list, name, value);
        if (failed == 0 && role > ROLE_OTHER && role < ROLE_COUNT) {
            PyObject *previous = roles[role];
            if (role == ROLE_CONNECTION && previous != NULL) {
                roles[role] = PyUnicode_FromFormat("%U,%U", previous, value);
                Py_DECREF(previous);
                if (roles[role] == NULL) {
                    failed = -1;
                }
            }
            else {
                Py_INCREF(value);
                roles[role] = value;
                Py_XDECREF(previous);
            }
        }
        Py_DECREF(value);
        if (failed < 0) {
            goto error;
        }
    }
    PyObject *result = PyTuple_New(ROLE_COUNT);
    if (result == NULL) {
        goto error;
    }
    PyTuple_SET_ITEM(result, 0, as_list);
    for (int role = 1; role < ROLE_COUNT; role++) {
        PyObject *value = roles[role] != NULL ? roles[role] : Py_None;
        if (roles[role] == NULL) {
            Py_INCREF(Py_None);
        }
        PyTuple_SET_ITEM(result, role, value);
    }
    return result;

error:
    for (int role = 0; role < ROLE_COUNT; role++) {
        Py_XDECREF(roles[role]);
    }
    Py_DECREF(as_list);
    return NULL;
}

static PyMethodDef speedups_methods[] = {
    {"xhtml_escape", (PyCFunction)(void (*)(void))xhtml_escape, METH_FASTCALL, xhtml_escape_doc},
    {"header_lines", header_lines, METH_O, header_lines_doc},
    {"parse_qs", (PyCFunction)(void (*)(void))parse_qs, METH_FASTCALL, parse_qs_doc},
    {"pair_appender", pair_appender, METH_O, pair_appender_doc},
    {"build_headers", (PyCFunction)(void (*)(void))build_headers, METH_FASTCALL, build_headers_doc},
    {NULL, NULL, 0, NULL},
};

static PyModuleDef_Slot speedups_slots[] = {
    {0, NULL},
};

static struct PyModuleDef speedups_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "squall._speedups",
    .m_doc = "Optional C versions of squall's hot functions.",
    .m_size = 0,
    .m_methods = speedups_methods,
    .m_slots = speedups_slots,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    return PyModuleDef_Init(&speedups_module);
}
