"""What every stage shares; imports nothing from the stages above it.

`errors` (LeadFormatError and friends), `atomic` (temp-then-rename writes), `constants` (LEAD's shapes,
classes and ranges), `layout` (LEAD's folder and file names), `codecs` / `container` / `array_filters`
(sample member encodings and the `LSC2` array container), `runs` (run-length coding), `geometry` (ego /
BEV transforms and rasterisation), `batch` (the `Batch` contract between loader, model and trainer) and
`config` (strict `key=value` overrides for any config dataclass). Nothing is re-exported here, so
`import lead_stream.core.layout` stays light (no torch).
"""
