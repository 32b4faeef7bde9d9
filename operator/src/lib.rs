//! The Confab operator: reconciles `ChatCluster` resources (group
//! `confab.dev`) into gateway and dispatcher Deployments and their Services.
