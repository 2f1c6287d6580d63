# Sourced by tests/drivers/java/build.sh and tests/features/build.sh: the Maven step they share.
# Needs `cache`, `out` and a `log` function from the caller.
#
# maven_jars POM PROPERTY LIB HASH REQUIRED WHAT
#   Checks for mvn and javac, takes $out/.build.lock (held until the caller exits), and, unless
#   LIB/.complete holds HASH, has Maven copy POM's runtime jars (the pom's PROPERTY names the
#   output directory) into a staging directory with $cache/m2 as the local repository, checks
#   that a jar matching REQUIRED is there and moves it to LIB; Maven's output is in $out/maven.log.
maven_jars() {
    local pom="$1" property="$2" lib="$3" hash="$4" required="$5" what="$6"
    for tool in mvn javac; do
        command -v "$tool" >/dev/null || { log "$tool not found on PATH (a JDK 11+ and Maven are needed)"; exit 1; }
    done
    mkdir -p "$out"
    exec 9>"$out/.build.lock"
    flock 9
    if [[ -f "$lib/.complete" && "$(cat "$lib/.complete")" == "$hash" ]]; then return 0; fi
    local staging="$out/lib.partial-$$"
    rm -rf "$staging"
    log "fetching $what with Maven into $lib"
    if ! mvn --batch-mode --no-transfer-progress -Dstyle.color=never -f "$pom" \
        "-Dmaven.repo.local=$cache/m2" "-D$property=$staging" dependency:copy-dependencies \
        >"$out/maven.log" 2>&1; then
        rm -rf "$staging"
        tail -n 30 "$out/maven.log" >&2
        log "Maven failed (full log: $out/maven.log)"
        exit 1
    fi
    compgen -G "$staging/$required" >/dev/null || { log "no $required in $staging"; exit 1; }
    rm -rf "$lib"
    mv "$staging" "$lib"
    echo "$hash" >"$lib/.complete"
}
