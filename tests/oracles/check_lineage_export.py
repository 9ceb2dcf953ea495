"""Independent checks of `pipeline lineage export`, run by tests/engine_export.rs.

usage: check_lineage_export.py openlineage EVENTS.ndjson SPEC_DIR
       check_lineage_export.py prov DOC.json

openlineage: every event validates against OpenLineage.json (2-0-2) and each
standard facet against its own schema file (offline: the schemas are
registered under their $id); every run has one START and at most one end
event; every parent run id is a run of the export. Prints a JSON summary.

prov: the document is read by the `prov` package (W3C PROV-JSON) and its
records are counted by type. Prints a JSON summary.
"""
import collections
import json
import pathlib
import sys


def openlineage(events_file, spec_dir):
    import jsonschema
    from referencing import Registry, Resource

    spec = pathlib.Path(spec_dir)
    schemas = {}
    for f in spec.glob("*.json"):
        s = json.loads(f.read_text())
        schemas[s["$id"]] = s
    registry = Registry().with_resources(
        (i, Resource.from_contents(s)) for i, s in schemas.items()
    )
    main = schemas["https://openlineage.io/spec/2-0-2/OpenLineage.json"]
    validator = jsonschema.Draft202012Validator(
        main, registry=registry, format_checker=jsonschema.FormatChecker()
    )
    lines = pathlib.Path(events_file).read_text().splitlines()
    starts, ends, parents = collections.Counter(), collections.Counter(), set()
    facets_checked = 0
    versions = {}
    for n, line in enumerate(lines, 1):
        ev = json.loads(line)
        errors = sorted(validator.iter_errors(ev), key=str)
        if errors:
            raise SystemExit(f"event {n} is not a valid run event: {errors[0].message}")
        facets = dict(ev["run"].get("facets", {}))
        facets.update(ev["job"].get("facets", {}))
        for ds in ev.get("inputs", []) + ev.get("outputs", []):
            facets.update(ds.get("facets", {}))
            versions[ds["name"]] = ds["facets"]["version"]["datasetVersion"]
        for name, facet in facets.items():
            url = facet["_schemaURL"]
            base, _, pointer = url.partition("#")
            if base not in schemas:
                continue  # a facet of the producer's own
            key = pointer.rsplit("/", 1)[-1]
            schema = {"$ref": url}
            v = jsonschema.Draft202012Validator(
                schema, registry=registry, format_checker=jsonschema.FormatChecker()
            )
            errs = list(v.iter_errors(facet))
            if errs:
                raise SystemExit(f"event {n}: facet {name} ({key}): {errs[0].message}")
            facets_checked += 1
        rid = ev["run"]["runId"]
        if ev["eventType"] == "START":
            starts[rid] += 1
        else:
            ends[rid] += 1
        p = ev["run"].get("facets", {}).get("parent")
        if p:
            parents.add(p["run"]["runId"])
    if any(c != 1 for c in starts.values()):
        raise SystemExit("a run has more than one START event")
    if any(c > 1 for c in ends.values()) or set(ends) - set(starts):
        raise SystemExit("a run has more than one end event, or an end without a START")
    if parents - set(starts):
        raise SystemExit(f"parent runs without events: {sorted(parents - set(starts))}")
    kinds = collections.Counter(json.loads(l)["eventType"] for l in lines)
    print(json.dumps({"events": len(lines), "runs": len(starts), "types": kinds,
                      "facets_checked": facets_checked, "parents": len(parents),
                      "versions": versions}))


def prov_doc(doc_file):
    import prov.model
    from prov.serializers.provjson import ProvJSONSerializer

    with open(doc_file) as f:
        doc = ProvJSONSerializer().deserialize(f)
    counts = collections.Counter(type(r).__name__ for r in doc.get_records())
    derived = []
    for r in doc.get_records(prov.model.ProvDerivation):
        args = dict(r.formal_attributes)
        derived.append([str(args[prov.model.PROV_ATTR_GENERATED_ENTITY]),
                        str(args[prov.model.PROV_ATTR_USED_ENTITY])])
    labels = {}
    for e in doc.get_records(prov.model.ProvEntity):
        labels[str(e.identifier)] = [str(v) for v in e.get_attribute("prov:label")][0]
    print(json.dumps({"counts": counts, "derived": derived, "labels": labels}))


if __name__ == "__main__":
    if sys.argv[1] == "openlineage":
        openlineage(sys.argv[2], sys.argv[3])
    else:
        prov_doc(sys.argv[2])
