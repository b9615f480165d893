// Starts Swagger UI on /docs (a file of its own: the Content-Security-Policy allows no inline script).
window.ui = SwaggerUIBundle({
  url: '/schema/openapi.json',
  dom_id: '#swagger-container',
  deepLinking: true,
  showExtensions: true,
  showCommonExtensions: true,
  validatorUrl: null,
  presets: [SwaggerUIBundle.presets.apis, SwaggerUIBundle.SwaggerUIStandalonePreset],
})
