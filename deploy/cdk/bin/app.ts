#!/usr/bin/env node
import { buildApp } from '../lib/app';

// `cdk synth|diff|deploy|destroy <stack>`; values come from lib/config.ts and the `hybridgw`
// context key (cdk.json or -c hybridgw='{"network":{"natGateways":3}}').
buildApp().app.synth();
