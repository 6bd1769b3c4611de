# shellcheck shell=bash
# The Debian package source this machine's apt uses, for debootstrap (sourced by
# deploy/smoke.sh; tests/test_smoke_apt_source.py runs it against fake apt folders).
#
#   debian_mirror APT_DIR SUITE   prints the URI of an enabled `deb` source of APT_DIR
#                                 (sources.list, then sources.list.d/*.list and *.sources in
#                                 apt's order), one that carries SUITE if there is one, else
#                                 the first whose suite is a release (not -security,
#                                 -updates, -backports, ...); exit 1 with a message if none.
#
# Both formats: one-line (`deb [options] URI SUITE COMPONENTS...`) and deb822 stanzas
# (Types, URIs, Suites, Enabled). Only http, https and file URIs: what debootstrap fetches.

debian_mirror() {
    local apt_dir="$1" suite="$2" files=() file found
    [ -f "$apt_dir/sources.list" ] && files+=("$apt_dir/sources.list")
    for file in "$apt_dir"/sources.list.d/*.list "$apt_dir"/sources.list.d/*.sources; do
        [ -f "$file" ] && files+=("$file")
    done
    found="$(
        for file in ${files[@]+"${files[@]}"}; do
            case "$file" in
            *.sources) _deb822_sources <"$file" ;;
            *) _one_line_sources <"$file" ;;
            esac
        done | _pick_source "$suite"
    )"
    if [ -z "$found" ]; then
        echo "no Debian package source in the apt configuration ($apt_dir/sources.list," \
            "$apt_dir/sources.list.d/*.list or *.sources): no enabled 'deb' entry with an" \
            "http, https or file URI" >&2
        return 1
    fi
    printf '%s\n' "$found"
}

# "SUITE URI" for each deb entry of a one-line sources.list.
_one_line_sources() {
    sed -e 's/#.*//' -e 's/\[[^]]*\]//' | awk '$1 == "deb" && NF >= 3 { print $3, $2 }'
}

# "SUITE URI" for each URI x suite of each enabled deb822 stanza with Types: deb.
_deb822_sources() {
    sed '/^#/d' | awk '
        function flush(   n, m, i, j, uri, suite) {
            if (types ~ /(^| )deb( |$)/ && tolower(enabled) != "no") {
                n = split(uris, uri, " ")
                m = split(suites, suite, " ")
                for (i = 1; i <= n; i++) for (j = 1; j <= m; j++) print suite[j], uri[i]
            }
            types = uris = suites = enabled = ""
        }
        /^[ \t]*$/ { flush(); next }
        /^[ \t]/ { next }                                   # a continuation (Signed-By key)
        {
            key = tolower($1); sub(/:$/, "", key)
            value = $0; sub(/^[^:]*:[ \t]*/, "", value)
            if (key == "types") types = value
            else if (key == "uris") uris = value
            else if (key == "suites") suites = value
            else if (key == "enabled") enabled = value
        }
        END { flush() }
    '
}

# The URI carrying SUITE, else the first release suite's; only URIs debootstrap can use.
_pick_source() {
    awk -v wanted="$1" '
        $2 !~ /^(https?:\/\/|file:\/)/ { next }
        $1 == wanted && exact == "" { exact = $2 }
        $1 !~ /[-\/]/ && release == "" { release = $2 }
        END { if (exact != "") print exact; else if (release != "") print release }
    '
}
