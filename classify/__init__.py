"""Light heads on cached features: Keras MLPs, LightAutoML, pre-trained-only rules and blends (imports
`features` and `postprocess`)."""
